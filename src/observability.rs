//! The outermost layer: one span per RPC carrying OpenTelemetry's RPC
//! semantic-convention attributes, a request id, a completion log line at a
//! level that separates client errors from server errors, and the RPC
//! metrics.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::metrics::Metrics;

/// Wraps services in [`RpcMiddleware`].
#[derive(Clone)]
pub struct RpcLayer {
    metrics: Metrics,
}

impl RpcLayer {
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMiddleware {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct RpcMiddleware<S> {
    inner: S,
    metrics: Metrics,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// gRPC code names as go-grpc-prometheus labels them.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

impl<S, B> Service<http::Request<B>> for RpcMiddleware<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((&path, ""));
        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr);
        let request_id = request_id(request.headers());
        let span = tracing::info_span!(
            "rpc",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            network.peer.address = peer.map(|p| p.ip().to_string()).unwrap_or_default(),
            network.peer.port = peer.map(|p| p.port()).unwrap_or_default(),
            enduser.id = tracing::field::Empty,
            request_id = %request_id,
        );
        let observed = !path.starts_with("/grpc.reflection.");
        if observed {
            self.metrics.rpc_started(&path);
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Entered so the auth layer can record the user on this span.
        let future = span.in_scope(|| inner.call(request));
        let metrics = self.metrics.clone();
        let started = Instant::now();
        Box::pin(
            async move {
                let mut response = future.await?;
                // Errors from unary handlers travel as trailers-only responses,
                // so their status is in the headers; no status there is OK.
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or(0);
                let elapsed = started.elapsed();
                let name = code_name(code);
                tracing::Span::current().record("rpc.grpc.status_code", code);
                let duration_ms = elapsed.as_secs_f64() * 1000.0;
                match code {
                    // Server-side failures.
                    2 | 13 | 15 => tracing::error!(code = name, duration_ms, "rpc failed"),
                    4 | 14 => tracing::warn!(code = name, duration_ms, "rpc failed"),
                    // OK and client errors (bad input, not found, denied...).
                    _ => tracing::info!(code = name, duration_ms, "rpc handled"),
                }
                if observed {
                    metrics.rpc_handled(&path, name, elapsed);
                }
                if let Ok(value) = http::HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert("x-request-id", value);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}
