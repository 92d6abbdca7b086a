//! The outermost layer: one span per RPC carrying OpenTelemetry's RPC
//! semantic-convention attributes, a request id, a completion log line at a
//! level that separates client errors from server errors, and the RPC
//! metrics.
//!
//! It is also the edge for statuses tonic makes itself before any handler
//! runs: a request it could not read is the client's fault, never INTERNAL,
//! a call the client abandoned is CANCELLED, whatever tonic answered into
//! the closed stream, and a call past its deadline is DEADLINE_EXCEEDED.
//!
//! Hand-written rather than tower-http's `TraceLayer` and request-id
//! layers: those see HTTP, not gRPC. The RPC's code arrives in trailers or
//! in a trailers-only response, tonic's own statuses must be rewritten (not
//! just classified), a dropped call must be told apart as cancelled or past
//! its deadline, and a client's `x-request-id` is kept only if it is short
//! and plain (it goes into every log line), where `SetRequestIdLayer` keeps
//! any value. One layer doing all of it also reads the path and headers
//! once per call, on the path every RPC takes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Code, Status};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::auth::RequestId;
use crate::metrics::{code_name, MethodHandle, Metrics};
use crate::telemetry;

/// Wraps services in [`RpcMiddleware`].
#[derive(Clone)]
pub struct RpcLayer {
    metrics: Metrics,
    server_timeout: Duration,
}

impl RpcLayer {
    /// `server_timeout` is the deadline the server puts on a call that sets
    /// none (the server builder's `timeout`, which tonic enforces too, but
    /// answers CANCELLED): past its deadline a call is answered
    /// DEADLINE_EXCEEDED here.
    pub fn new(metrics: Metrics, server_timeout: Duration) -> Self {
        Self {
            metrics,
            server_timeout,
        }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMiddleware {
            inner,
            metrics: self.metrics.clone(),
            server_timeout: self.server_timeout,
        }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct RpcMiddleware<S> {
    inner: S,
    metrics: Metrics,
    server_timeout: Duration,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

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

fn insert_request_id(headers: &mut http::HeaderMap, request_id: &str) {
    if let Ok(value) = http::HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", value);
    }
}

/// The client's deadline from `grpc-timeout` (at most 8 digits and a unit,
/// as gRPC's HTTP/2 protocol defines it), read as tonic reads it.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 60 * 60),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Messages of the statuses tonic (and prost, through it) answers when it
/// cannot read the request message: an unparsable protobuf (garbage bytes,
/// a string that is not UTF-8), a truncated or empty body, a bad
/// compressed-flag, a body that does not decompress. The request is the
/// client's fault, so INVALID_ARGUMENT: the client learns not to retry it
/// unchanged, and INTERNAL keeps meaning a bug here. Only these texts tell
/// them apart from a handler's INTERNAL; tests pin each.
const UNREADABLE_REQUEST: &[&str] = &[
    "failed to decode Protobuf message",
    "Unexpected EOF decoding stream",
    "Missing request message",
    "protocol error: received message with",
    "Error decompressing",
];

/// tonic's answer to a message larger than the server's decoding limit,
/// OUT_OF_RANGE, where gRPC's status-code table (and so every other
/// implementation) says RESOURCE_EXHAUSTED.
const TOO_LARGE: &str = "Error, decoded message length too large";

/// The code the client gets for a status tonic made about a request it
/// could not read, where that differs from tonic's; `None` keeps the code
/// (every status a handler makes).
fn reclassify(code: Code, message: &str) -> Option<Code> {
    match code {
        Code::OutOfRange if message.starts_with(TOO_LARGE) => Some(Code::ResourceExhausted),
        Code::Internal if UNREADABLE_REQUEST.iter().any(|p| message.starts_with(p)) => {
            Some(Code::InvalidArgument)
        }
        _ => None,
    }
}

fn grpc_message(headers: &http::HeaderMap) -> String {
    headers
        .get("grpc-message")
        .map(|value| {
            percent_encoding::percent_decode(value.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default()
}

/// Ends an RPC exactly once: counts it, records its code on the span and
/// logs the completion line in the span. Dropped unfinished, the call was
/// abandoned: at or past its deadline, DEADLINE_EXCEEDED; before it, the
/// client cancelled.
struct Completion {
    method: MethodHandle,
    span: tracing::Span,
    started: Instant,
    deadline: Duration,
    finished: bool,
}

impl Completion {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        self.method.handled(code, elapsed);
        let name = code_name(code);
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        self.span.in_scope(|| {
            tracing::Span::current().record("rpc.grpc.status_code", code as i32);
            // OpenTelemetry's gRPC conventions: a server span is an error
            // only for the codes that mean the server failed.
            if matches!(
                code,
                Code::Unknown
                    | Code::DeadlineExceeded
                    | Code::Unimplemented
                    | Code::Internal
                    | Code::Unavailable
                    | Code::DataLoss
            ) {
                tracing::Span::current().record("otel.status_code", "ERROR");
            }
            match code {
                // Server-side failures.
                Code::Unknown | Code::Internal | Code::DataLoss => {
                    tracing::error!(code = name, duration_ms, "rpc failed");
                }
                Code::DeadlineExceeded | Code::Unavailable => {
                    tracing::warn!(code = name, duration_ms, "rpc failed");
                }
                // The client went away: nothing failed here.
                Code::Cancelled => tracing::info!(code = name, duration_ms, "rpc cancelled"),
                // OK and client errors (bad input, not found, denied...).
                _ => tracing::info!(code = name, duration_ms, "rpc handled"),
            }
        });
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.finished {
            let code = if self.started.elapsed() >= self.deadline {
                Code::DeadlineExceeded
            } else {
                Code::Cancelled
            };
            self.finish(code);
        }
    }
}

/// Sees each frame of a body as it passes through an [`ObservedBody`].
trait FrameObserver: Unpin {
    fn observe(&mut self, frame: &Option<Result<Frame<Bytes>, Status>>);

    /// Whether the body may report its end yet.
    fn allows_end(&self) -> bool {
        true
    }
}

/// A body passed through unchanged, frame by frame, past an observer.
struct ObservedBody<O> {
    inner: Body,
    observer: O,
}

impl<O: FrameObserver> http_body::Body for ObservedBody<O> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        self.observer.observe(&frame);
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.observer.allows_end() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// On the request body: notes whether reading it failed, i.e. the client
/// reset the stream or dropped the connection mid-request.
struct AbortFlag(Arc<AtomicBool>);

impl FrameObserver for AbortFlag {
    fn observe(&mut self, frame: &Option<Result<Frame<Bytes>, Status>>) {
        if matches!(frame, Some(Err(_))) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// On a response whose status comes in trailers (any response but an error
/// answered at once): the RPC ends with them, or, if the body is dropped
/// first, was abandoned.
impl FrameObserver for Completion {
    fn observe(&mut self, frame: &Option<Result<Frame<Bytes>, Status>>) {
        match frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = trailers
                        .get("grpc-status")
                        .map_or(Code::Unknown, |v| Code::from_bytes(v.as_bytes()));
                    self.finish(code);
                }
            }
            Some(Err(status)) => self.finish(status.code()),
            // A gRPC response always ends with a status.
            None => self.finish(Code::Unknown),
        }
    }

    /// Not before the status is seen, so that nothing drops the body (and
    /// with it the completion) unread.
    fn allows_end(&self) -> bool {
        self.finished
    }
}

impl<S> Service<http::Request<Body>> for RpcMiddleware<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // Taken before tonic's deadline timer starts (it starts once this
        // returns), so a call dropped by that timer is always past it here.
        let started = Instant::now();
        let path = request.uri().path();
        let method = self.metrics.method(path);
        let (service, method_name) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr);
        let request_id = request_id(request.headers());
        let span = tracing::info_span!(
            "rpc",
            // Unknown paths share one name, so clients cannot add names.
            otel.name = if method.is_known() { path.trim_start_matches('/') } else { "unknown" },
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method_name,
            rpc.grpc.status_code = tracing::field::Empty,
            network.peer.address = peer.map(|p| p.ip().to_string()).unwrap_or_default(),
            network.peer.port = peer.map(|p| p.port()).unwrap_or_default(),
            enduser.id = tracing::field::Empty,
            request_id = %request_id,
        );
        telemetry::continue_trace(&span, request.headers());
        let deadline = grpc_timeout(request.headers()).map_or(self.server_timeout, |client| {
            client.min(self.server_timeout)
        });
        method.started();
        let mut completion = Completion {
            method,
            span: span.clone(),
            started,
            deadline,
            finished: false,
        };

        // The handlers record it (the audit log).
        request
            .extensions_mut()
            .insert(RequestId(request_id.as_str().into()));
        let aborted = Arc::new(AtomicBool::new(false));
        let request = request.map(|inner| {
            Body::new(ObservedBody {
                inner,
                observer: AbortFlag(aborted.clone()),
            })
        });
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Entered so the auth layer can record the user on this span.
        let future = span.in_scope(|| inner.call(request));
        Box::pin(
            async move {
                // Dropped here (the client reset the stream), `completion`
                // logs and counts the abandoned call.
                let deadline = tokio::time::Instant::from_std(started) + deadline;
                let response = match tokio::time::timeout_at(deadline, future).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(error)) => {
                        completion.finish(Code::Unknown);
                        return Err(error);
                    }
                    // tonic's own timer, outside this layer, would answer
                    // CANCELLED; gRPC says DEADLINE_EXCEEDED. This one
                    // started first, so it fires first.
                    Err(_) => {
                        completion.finish(Code::DeadlineExceeded);
                        let status = Status::deadline_exceeded("the call's deadline passed");
                        let mut response = status.into_http::<Body>();
                        insert_request_id(response.headers_mut(), &request_id);
                        return Ok(response);
                    }
                };
                let (mut parts, body) = response.into_parts();
                insert_request_id(&mut parts.headers, &request_id);
                // An error answered at once carries its status in the
                // headers (trailers-only); otherwise it comes at the end.
                let Some(status) = parts.headers.get("grpc-status") else {
                    let body = Body::new(ObservedBody {
                        inner: body,
                        observer: completion,
                    });
                    return Ok(http::Response::from_parts(parts, body));
                };
                let mut code = Code::from_bytes(status.as_bytes());
                if code != Code::Ok && aborted.load(Ordering::Relaxed) {
                    // tonic answered what it could of a half-read request;
                    // the client has gone and will never see it.
                    code = Code::Cancelled;
                } else if let Some(edge_code) = reclassify(code, &grpc_message(&parts.headers)) {
                    code = edge_code;
                }
                parts
                    .headers
                    .insert("grpc-status", http::HeaderValue::from(code as i32));
                completion.finish(code);
                Ok(http::Response::from_parts(parts, body))
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tonics_own_statuses_about_unreadable_requests_are_reclassified() {
        assert_eq!(
            reclassify(
                Code::Internal,
                "failed to decode Protobuf message: LoginRequest.email: invalid string value: data is not UTF-8 encoded"
            ),
            Some(Code::InvalidArgument)
        );
        assert_eq!(
            reclassify(
                Code::OutOfRange,
                "Error, decoded message length too large: found 204811 bytes, the limit is: 65536 bytes"
            ),
            Some(Code::ResourceExhausted)
        );
        // A handler's own codes pass through untouched.
        assert_eq!(reclassify(Code::Internal, "internal error"), None);
        assert_eq!(reclassify(Code::OutOfRange, "page beyond the end"), None);
        assert_eq!(
            reclassify(Code::InvalidArgument, "failed to decode Protobuf message"),
            None
        );
    }

    #[test]
    fn grpc_timeout_is_read_in_each_unit_and_garbage_is_ignored() {
        let timeout = |value: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", http::HeaderValue::from_static(value));
            grpc_timeout(&headers)
        };
        assert_eq!(timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout("100n"), Some(Duration::from_nanos(100)));
        assert_eq!(timeout("123456789S"), None);
        assert_eq!(timeout("10x"), None);
        assert_eq!(timeout("S"), None);
    }
}
