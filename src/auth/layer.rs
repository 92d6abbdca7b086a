//! The one authentication layer: a tower layer around every gRPC service.
//! It reads `authorization: Bearer <token>`, verifies it, checks that the
//! token's session is live (cached, see [`Sessions`]) and puts the
//! [`Caller`], with the user's current role, into the request's extensions.
//! Anything not on the public list without a valid token is answered
//! UNAUTHENTICATED before any handler runs, so a new RPC is protected by
//! default.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};

use super::{Caller, Sessions, TokenKeys};
use crate::domain::{SessionId, UserId};
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
    sessions: Sessions,
    limits: RateLimits,
}

impl AuthLayer {
    pub fn new(keys: Arc<TokenKeys>, sessions: Sessions, limits: RateLimits) -> Self {
        Self {
            keys,
            sessions,
            limits,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthMiddleware {
            inner,
            keys: self.keys.clone(),
            sessions: self.sessions.clone(),
            limits: self.limits.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct AuthMiddleware<S> {
    inner: S,
    keys: Arc<TokenKeys>,
    sessions: Sessions,
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
        let presented = match presented_token(&self.keys, request.headers()) {
            Ok(token) => Ok(token),
            Err(Presented::Invalid(reason)) => Err(reason),
            // Two authorization entries are ambiguous: which one would a
            // proxy in front have checked? Refused even on public RPCs.
            Err(Presented::Ambiguous) => {
                let status = tonic::Status::unauthenticated(
                    "send one `authorization` metadata entry, not several",
                );
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        // Health and reflection are exempt; everyone else has a bucket. The
        // token's user is counted before its session is checked, so a
        // flood of tokens cannot buy itself database lookups.
        let rate_key = match (&presented, address) {
            _ if exempt => None,
            (Ok(Some(token)), _) => Some(RateKey::User(token.user_id)),
            (_, Some(ip)) => Some(RateKey::address(ip)),
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
        let sessions = self.sessions.clone();
        // The clone is ready only if polled; swap so the polled one serves.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let authenticated = match presented {
                Ok(Some(token)) => match sessions.live(token.session_id).await {
                    Ok(Some(session)) if session.user_id == token.user_id => Ok(Some(Caller {
                        user_id: session.user_id,
                        role: session.role,
                    })),
                    Ok(_) => Err("the session has ended (signed out, password changed or user deleted); log in again"),
                    // Fail closed: an unknown session state is no session.
                    Err(error) => return Ok(tonic::Status::from(error).into_http()),
                },
                Ok(None) => Ok(None),
                Err(reason) => Err(reason),
            };
            match authenticated {
                Ok(Some(caller)) => {
                    tracing::Span::current()
                        .record("enduser.id", tracing::field::display(caller.user_id));
                    request.extensions_mut().insert(caller);
                }
                Ok(None) | Err(_) if public => {}
                Ok(None) => {
                    let status = tonic::Status::unauthenticated(
                        "missing access token: send metadata `authorization: Bearer <token>` (see AuthService.Login)",
                    );
                    return Ok(status.into_http());
                }
                Err(reason) => return Ok(tonic::Status::unauthenticated(reason).into_http()),
            }
            inner.call(request).await
        })
    }
}

/// The user and session an access token names.
struct PresentedToken {
    user_id: UserId,
    session_id: SessionId,
}

/// Why a presented authorization entry is unusable.
enum Presented {
    /// Refused with this client-safe reason (ignored on public RPCs).
    Invalid(&'static str),
    /// More than one entry.
    Ambiguous,
}

/// `Ok(None)` without an authorization header; `Err` when one is present
/// but unusable.
fn presented_token(
    keys: &TokenKeys,
    headers: &http::HeaderMap,
) -> Result<Option<PresentedToken>, Presented> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Presented::Ambiguous);
    }
    let value = value
        .to_str()
        .map_err(|_| Presented::Invalid("authorization metadata is not valid text"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or(Presented::Invalid(
            "authorization metadata must be `Bearer <token>`",
        ))?;
    let (user_id, session_id) = keys.verify(token).map_err(Presented::Invalid)?;
    Ok(Some(PresentedToken {
        user_id,
        session_id,
    }))
}
