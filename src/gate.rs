//! A tower layer for checks that answer at once or let the request through:
//! reading the caller's credentials and the rate limit. Each check is a
//! [`Gate`]; [`GateLayer`] is the one middleware around all of them, so a new
//! check is a function, not another copy of tower's Layer/Service pair.

use std::task::{Context, Poll};

use futures_util::future::{ready, BoxFuture, Either, FutureExt, Ready};
use tonic::body::Body;
use tower::{Layer, Service};

/// A check made before the request goes on: `Err` is the answer the client
/// gets instead. It may annotate the request (extensions) for inner layers.
pub trait Gate: Clone {
    fn check<B>(&self, request: &mut http::Request<B>) -> Check;
}

/// A gate's answer: at once, or (a check that must ask another service,
/// like the shared rate limit's Redis) later.
pub enum Check {
    Now(Result<(), tonic::Status>),
    Later(BoxFuture<'static, Result<(), tonic::Status>>),
}

/// Wraps services in [`Gated`].
#[derive(Clone)]
pub struct GateLayer<G>(pub G);

impl<S, G: Gate> Layer<S> for GateLayer<G> {
    type Service = Gated<S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        Gated {
            inner,
            gate: self.0.clone(),
        }
    }
}

/// A service behind a [`Gate`].
#[derive(Clone)]
pub struct Gated<S, G> {
    inner: S,
    gate: G,
}

type Answer<S, B> =
    Result<<S as Service<http::Request<B>>>::Response, <S as Service<http::Request<B>>>::Error>;

impl<S, G, B> Service<http::Request<B>> for Gated<S, G>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    G: Gate,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Either<Ready<Answer<S, B>>, S::Future>, BoxFuture<'static, Answer<S, B>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.gate.check(&mut request) {
            Check::Now(Ok(())) => Either::Left(Either::Right(self.inner.call(request))),
            Check::Now(Err(status)) => Either::Left(Either::Left(ready(Ok(status.into_http())))),
            Check::Later(check) => {
                // The clone is ready only if polled; swap so the polled one
                // serves.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Either::Right(
                    async move {
                        match check.await {
                            Ok(()) => inner.call(request).await,
                            Err(status) => Ok(status.into_http()),
                        }
                    }
                    .boxed(),
                )
            }
        }
    }
}
