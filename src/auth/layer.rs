//! The one authentication layer: a tower layer around every gRPC service.
//! It reads `authorization: Bearer <token>`, verifies it, and puts the
//! [`Caller`] into the request's extensions. Anything not on the public list
//! without a valid token is answered UNAUTHENTICATED before any handler runs,
//! so a new RPC is protected by default.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};

use super::{Caller, TokenKeys};
use crate::rate_limit::{RateKey, RateLimits};

/// Full method paths callable without an access token. On these a token is
/// optional and an invalid one is ignored (a client refreshing its session
/// typically still sends the expired token).
pub const PUBLIC_METHODS: &[&str] = &[
    "/chatbot.v1.AuthService/Login",
    "/chatbot.v1.AuthService/RefreshToken",
    "/chatbot.v1.UserService/CreateUser",
    "/chatbot.v1.ApiKeyService/VerifyApiKey",
];

/// Whole services that never need a token: probes and reflection.
const PUBLIC_SERVICE_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

fn is_public(path: &str) -> bool {
    PUBLIC_METHODS.contains(&path) || PUBLIC_SERVICE_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// Limited per API key inside the handler instead of per address: one
/// calling service verifies many keys from one address.
const PER_KEY_LIMITED: &str = "/chatbot.v1.ApiKeyService/VerifyApiKey";

/// Wraps services in [`AuthMiddleware`].
#[derive(Clone)]
pub struct AuthLayer {
    keys: Arc<TokenKeys>,
    limits: RateLimits,
}

impl AuthLayer {
    pub fn new(keys: Arc<TokenKeys>, limits: RateLimits) -> Self {
        Self { keys, limits }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthMiddleware {
            inner,
            keys: self.keys.clone(),
            limits: self.limits.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct AuthMiddleware<S> {
    inner: S,
    keys: Arc<TokenKeys>,
    limits: RateLimits,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

impl<S, B> Service<http::Request<B>> for AuthMiddleware<S>
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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let public = is_public(path);
        let exempt =
            PUBLIC_SERVICE_PREFIXES.iter().any(|p| path.starts_with(p)) || path == PER_KEY_LIMITED;
        let address = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .map(|addr| addr.ip());
        let authenticated = authenticate(&self.keys, request.headers());
        // Health and reflection are exempt; everyone else has a bucket.
        let rate_key = match (&authenticated, address) {
            _ if exempt => None,
            (Ok(Some(caller)), _) => Some(RateKey::User(caller.user_id)),
            (_, Some(ip)) => Some(RateKey::Address(ip)),
            (_, None) => None,
        };
        if let Some(Err(retry_after)) = rate_key.map(|key| self.limits.check(key)) {
            let status = tonic::Status::with_error_details(
                tonic::Code::ResourceExhausted,
                "rate limit exceeded; retry later",
                ErrorDetails::with_retry_info(Some(retry_after)),
            );
            return Box::pin(async move { Ok(status.into_http()) });
        }
        match authenticated {
            Ok(Some(caller)) => {
                tracing::Span::current()
                    .record("enduser.id", tracing::field::display(caller.user_id));
                request.extensions_mut().insert(caller);
            }
            Ok(None) if public => {}
            Err(_) if public => {}
            Ok(None) => {
                let status = tonic::Status::unauthenticated(
                    "missing access token: send metadata `authorization: Bearer <token>` (see AuthService.Login)",
                );
                return Box::pin(async move { Ok(status.into_http()) });
            }
            Err(reason) => {
                let status = tonic::Status::unauthenticated(reason);
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        // The clone is ready only if polled; swap so the polled one serves.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(request).await })
    }
}

/// `Ok(None)` without an authorization header; `Err` with a client-safe
/// reason when one is present but unusable.
fn authenticate(
    keys: &TokenKeys,
    headers: &http::HeaderMap,
) -> Result<Option<Caller>, &'static str> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "authorization metadata is not valid text")?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or("authorization metadata must be `Bearer <token>`")?;
    let (user_id, role) = keys.verify(token)?;
    Ok(Some(Caller { user_id, role }))
}
