//! The standard `grpc.health.v1.Health` service, as the health protocol
//! specifies it: `Check` on a service nobody reported answers NOT_FOUND;
//! `Watch` on one sends SERVICE_UNKNOWN and keeps the stream open, sending
//! the status once the service is reported. tonic-health's service ends
//! such a `Watch` with NOT_FOUND, so this one replaces it (its generated
//! server and messages are still tonic-health's).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus as WireStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::ServingStatus;

type Statuses = HashMap<String, ServingStatus>;

/// Sets the status of services; each change reaches every `Watch`.
#[derive(Clone)]
pub struct HealthReporter {
    statuses: Arc<watch::Sender<Statuses>>,
}

/// The reporter and the service to add to the server. Like tonic-health's,
/// the whole server (`""`) starts SERVING.
pub fn health_reporter() -> (HealthReporter, HealthServer<HealthService>) {
    let (statuses, _) = watch::channel(HashMap::from([(String::new(), ServingStatus::Serving)]));
    let statuses = Arc::new(statuses);
    let service = HealthService {
        statuses: statuses.clone(),
    };
    (HealthReporter { statuses }, HealthServer::new(service))
}

impl HealthReporter {
    /// Reports `service` (`""` for the whole server) as `status`; watchers
    /// hear of it only if it changed.
    pub async fn set_service_status(&self, service: impl AsRef<str>, status: ServingStatus) {
        let service = service.as_ref();
        self.statuses.send_if_modified(|statuses| {
            statuses.insert(service.to_owned(), status) != Some(status)
        });
    }
}

fn wire(status: Option<ServingStatus>) -> i32 {
    match status {
        Some(status) => WireStatus::from(status) as i32,
        None => WireStatus::ServiceUnknown as i32,
    }
}

/// See the module documentation.
pub struct HealthService {
    statuses: Arc<watch::Sender<Statuses>>,
}

type WatchResponses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        let status = self.statuses.borrow().get(service).copied();
        match status {
            Some(status) => Ok(Response::new(HealthCheckResponse {
                status: wire(Some(status)),
            })),
            None => Err(Status::not_found("service not registered")),
        }
    }

    type WatchStream = WatchResponses;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let mut last = None;
        // The current status first, then each change of it; other
        // services' changes are not repeated.
        let updates = WatchStream::new(self.statuses.subscribe()).filter_map(move |statuses| {
            let status = wire(statuses.get(&service).copied());
            (last.replace(status) != Some(status)).then_some(Ok(HealthCheckResponse { status }))
        });
        Ok(Response::new(Box::pin(updates)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(service: &str) -> Request<HealthCheckRequest> {
        Request::new(HealthCheckRequest {
            service: service.into(),
        })
    }

    #[tokio::test]
    async fn a_watched_unknown_service_is_announced_once_it_is_reported() {
        let (reporter, _) = health_reporter();
        let service = HealthService {
            statuses: reporter.statuses.clone(),
        };
        let mut updates = service
            .watch(request("late.Service"))
            .await
            .unwrap()
            .into_inner();
        let status = |update: Option<Result<HealthCheckResponse, Status>>| {
            update.expect("the stream is open").unwrap().status
        };
        assert_eq!(
            status(updates.next().await),
            WireStatus::ServiceUnknown as i32
        );
        // Another service's change is not repeated to this watcher.
        reporter
            .set_service_status("other.Service", ServingStatus::NotServing)
            .await;
        reporter
            .set_service_status("late.Service", ServingStatus::Serving)
            .await;
        assert_eq!(status(updates.next().await), WireStatus::Serving as i32);
        reporter
            .set_service_status("late.Service", ServingStatus::NotServing)
            .await;
        assert_eq!(status(updates.next().await), WireStatus::NotServing as i32);
        assert_eq!(
            service
                .check(request("late.Service"))
                .await
                .unwrap()
                .into_inner()
                .status,
            WireStatus::NotServing as i32
        );
        assert_eq!(
            service
                .check(request("never.Service"))
                .await
                .unwrap_err()
                .code(),
            tonic::Code::NotFound
        );
    }
}
