//! `grpc.health.v1.Health` as the health protocol specifies it.

use std::future::Future;

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::helpers::{assert_code, spawn_app};

fn request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_on_an_unknown_service_sends_service_unknown_and_keeps_the_stream_open() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel());
    let mut unknown = health
        .watch(request("no.such.Service"))
        .await
        .expect("Watch on an unknown service is not an error")
        .into_inner();
    let first = unknown.message().await.unwrap().expect("a first status");
    assert_eq!(first.status, ServingStatus::ServiceUnknown as i32);

    // Check keeps answering NOT_FOUND for it, and known services are
    // watched as before.
    assert_code(
        health.check(request("no.such.Service")).await,
        Code::NotFound,
    );
    let mut server = health.watch(request("")).await.unwrap().into_inner();
    let first = server.message().await.unwrap().expect("a first status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // Still open: had the server ended the stream after its first
    // message, the end would have arrived before the answers since.
    let next = unknown.message();
    tokio::pin!(next);
    let still_open =
        std::future::poll_fn(|cx| std::task::Poll::Ready(next.as_mut().poll(cx).is_pending()))
            .await;
    assert!(still_open, "the stream ended: {:?}", next.await);
}
