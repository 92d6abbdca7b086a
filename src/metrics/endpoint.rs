//! The `/metrics` endpoint: Prometheus text over HTTP/1.1 on its own
//! listener, kept apart from the gRPC port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text;
use tokio::net::TcpListener;

use super::Metrics;
use crate::db::Database;

/// How long the exporter pauses after a failed accept (out of file
/// descriptors, say) before trying again: doubling, at most a second.
const ACCEPT_BACKOFF_START: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves `GET /metrics` over HTTP/1.1 until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Metrics, db: Database) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, "serving Prometheus metrics");
    tokio::spawn(async move {
        let mut backoff = ACCEPT_BACKOFF_START;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => {
                    backoff = ACCEPT_BACKOFF_START;
                    stream
                }
                Err(error) => {
                    // Logged once per run of failures, not once per retry.
                    if backoff == ACCEPT_BACKOFF_START {
                        tracing::warn!(%error, "metrics endpoint cannot accept connections");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let metrics = metrics.clone();
            let db = db.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    let db = db.clone();
                    async move { Ok::<_, Infallible>(respond(&request, &metrics, &db)) }
                });
                // A client that never finishes its request headers is cut off.
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(5))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn respond<B>(
    request: &http::Request<B>,
    metrics: &Metrics,
    db: &Database,
) -> http::Response<Full<Bytes>> {
    let response = http::Response::builder();
    if request.uri().path() != "/metrics" {
        return response
            .status(http::StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"metrics are at /metrics\n")))
            .unwrap_or_default();
    }
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return response
            .status(http::StatusCode::METHOD_NOT_ALLOWED)
            .header(http::header::ALLOW, "GET, HEAD")
            .body(Full::default())
            .unwrap_or_default();
    }
    let body = metrics.render(db);
    response
        .header(http::header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}
