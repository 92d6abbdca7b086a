//! A panic is a bug in this service, never something a client caused: the
//! call that hit it is answered INTERNAL (rather than a reset stream, which
//! a client would retry as a network fault) and the panic is logged at
//! ERROR with its location, inside the call's span (so with its request
//! id). Nothing else changes: the process and every other call go on.

use std::any::Any;
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;
use std::task::{Context, Poll};

use futures_util::future::{CatchUnwind, FutureExt, Map};
use tonic::body::Body;
use tower::{Layer, Service};

/// Logs every panic at ERROR with where it happened, once per process
/// (later calls do nothing). The previous hook is replaced: its stderr
/// text would bypass the log format and filter.
pub fn log_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| std::panic::set_hook(Box::new(log_panic)));
}

fn log_panic(info: &PanicHookInfo<'_>) {
    let location = info
        .location()
        .map(|location| {
            format!(
                "{}:{}:{}",
                location.file(),
                location.line(),
                location.column()
            )
        })
        .unwrap_or_default();
    tracing::error!(
        panic.location = %location,
        panic.message = %message(info.payload()),
        "panic: a bug in this service; the call is answered INTERNAL"
    );
}

/// The text a panic was raised with (`panic!("...")` gives a `&str` or a
/// `String`; anything else is not text).
fn message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not text)")
}

/// Answers a call whose handler panicked with INTERNAL.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

/// A service whose panics become INTERNAL answers.
#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

type Caught<T, E> = std::thread::Result<Result<T, E>>;

impl<S, B> Service<http::Request<B>> for CatchPanic<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    // Named, not boxed: this wraps every call, VerifyApiKey's included.
    #[allow(clippy::type_complexity)]
    type Future = Map<
        CatchUnwind<AssertUnwindSafe<S::Future>>,
        fn(Caught<S::Response, S::Error>) -> Result<S::Response, S::Error>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // A panic while building the future (before the first poll) is
        // caught too: `call` of the services inside only sets the future up.
        AssertUnwindSafe(self.inner.call(request))
            .catch_unwind()
            .map(answer_panic as fn(_) -> _)
    }
}

/// The inner answer, or INTERNAL for a call whose handler panicked (the
/// panic hook has logged it).
fn answer_panic<E>(caught: Caught<http::Response<Body>, E>) -> Result<http::Response<Body>, E> {
    match caught {
        Ok(answer) => answer,
        Err(_) => Ok(tonic::Status::internal("internal error").into_http()),
    }
}

/// Debug builds only (so never in a release binary): the environment
/// variable that makes calls to one gRPC method (its full path, such as
/// `/chatbot.v1.ApiKeyService/VerifyApiKey`) panic in the handler chain, so
/// that a black-box test can show what a bug does to a call and the log.
#[cfg(debug_assertions)]
pub const INJECT_PANIC_ENV: &str = "CHATBOT_BACKEND_DEBUG_PANIC_IN";

/// Panics in calls to the method [`INJECT_PANIC_ENV`] names, if any.
#[cfg(debug_assertions)]
#[derive(Debug, Clone, Default)]
pub struct InjectedPanicLayer {
    method: Option<std::sync::Arc<str>>,
}

#[cfg(debug_assertions)]
impl InjectedPanicLayer {
    pub fn from_env() -> Self {
        let method = std::env::var(INJECT_PANIC_ENV).ok().map(Into::into);
        if let Some(method) = &method {
            tracing::warn!(%method, "debug build: calls to this method will panic ({INJECT_PANIC_ENV})");
        }
        Self { method }
    }
}

#[cfg(debug_assertions)]
impl<S> Layer<S> for InjectedPanicLayer {
    type Service = InjectedPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InjectedPanic {
            inner,
            method: self.method.clone(),
        }
    }
}

#[cfg(debug_assertions)]
#[derive(Debug, Clone)]
pub struct InjectedPanic<S> {
    inner: S,
    method: Option<std::sync::Arc<str>>,
}

#[cfg(debug_assertions)]
impl<S, B> Service<http::Request<B>> for InjectedPanic<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let inject = self.method.as_deref() == Some(request.uri().path());
        let answer = self.inner.call(request);
        Box::pin(async move {
            // While the call is being served, as a handler's bug would.
            assert!(!inject, "a panic injected by {INJECT_PANIC_ENV}");
            answer.await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tower::ServiceExt;

    use super::*;

    /// A log writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_handler_that_panics_is_answered_internal_and_logged_at_error_with_its_location() {
        // Only for this test: the harness keeps its own report for the rest.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(log_panic));
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);

        let panicking = tower::service_fn(|_: http::Request<Body>| async {
            if true {
                panic!("an injected bug");
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
        });
        let answer = CatchPanicLayer
            .layer(panicking)
            .oneshot(http::Request::new(Body::empty()))
            .await
            .expect("the call is answered");
        std::panic::set_hook(previous);

        let status = tonic::Status::from_header_map(answer.headers()).expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(
            status.message(),
            "internal error",
            "nothing of the panic leaks"
        );
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("ERROR"), "{log}");
        assert!(log.contains("an injected bug"), "{log}");
        assert!(
            log.contains("src/panics.rs:"),
            "the location is logged: {log}"
        );
    }

    #[tokio::test]
    async fn a_call_that_does_not_panic_is_answered_as_the_handler_answers() {
        let fine = tower::service_fn(|_: http::Request<Body>| async {
            Ok::<_, std::convert::Infallible>(tonic::Status::not_found("gone").into_http())
        });
        let answer = CatchPanicLayer
            .layer(fine)
            .oneshot(http::Request::new(Body::empty()))
            .await
            .expect("the call is answered");
        let status = tonic::Status::from_header_map(answer.headers()).expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::NotFound);
    }
}
