//! A tower layer for checks that answer at once or let the request through:
//! reading the caller's credentials and the rate limit. Each check is a
//! [`Gate`]; [`GateLayer`] is the one middleware around all of them, so a new
//! check is a function, not another copy of tower's Layer/Service pair.

use std::task::{Context, Poll};

use futures_util::future::{ready, Either, Ready};
use tonic::body::Body;
use tower::{Layer, Service};

/// A check made before the request goes on: `Err` is the answer the client
/// gets instead. It may annotate the request (extensions) for inner layers.
pub trait Gate: Clone {
    fn check<B>(&self, request: &mut http::Request<B>) -> Result<(), tonic::Status>;
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

impl<S, G, B> Service<http::Request<B>> for Gated<S, G>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    G: Gate,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, Self::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.gate.check(&mut request) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(status) => Either::Left(ready(Ok(status.into_http()))),
        }
    }
}
