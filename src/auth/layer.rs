//! Authentication as two tower layers around every gRPC service, with the
//! rate limit (`crate::rate_limit::RateLimitGate`) between them:
//!
//! 1. [`CredentialsGate`] reads `authorization: Bearer <token>`, verifies
//!    the token's signature and puts the [`Credentials`] into the request's
//!    extensions. Only several authorization entries are refused here.
//! 2. The rate limit counts the request against the token's user, or the
//!    client's network without a usable token: before any session lookup,
//!    so a flood of tokens cannot buy itself database lookups.
//! 3. [`AuthLayer`] checks that the token's session is live (cached, see
//!    [`Sessions`]) and puts the [`Caller`], with the user's current role,
//!    into the extensions. Anything not on the public list without a valid
//!    token is answered UNAUTHENTICATED before any handler runs, so a new
//!    RPC is protected by default.
//!
//! Services and methods are named by the generated servers'
//! `NamedService::NAME`, so renaming a service or its package cannot
//! silently make a method public or private.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;
use tonic_health::pb::health_server::HealthServer;
use tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer as ReflectionV1;
use tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflectionServer as ReflectionV1Alpha;
use tower::{Layer, Service};

use crate::gate::{Check, Gate};

use super::{
    Caller, Principal, RequestId, ServiceAccountCaller, ServiceAccounts, Sessions, TokenKeys,
};
use crate::domain::{Role, ServiceAccountToken, SessionId, UserId};
use crate::proto::api_key_service_server::ApiKeyServiceServer;
use crate::proto::auth_service_server::AuthServiceServer;
use crate::proto::user_service_server::UserServiceServer;

/// One RPC: its service's full name and the method's name, matched against
/// a request path `/<service>/<method>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcMethod {
    pub service: &'static str,
    pub method: &'static str,
}

impl RpcMethod {
    pub const fn new(service: &'static str, method: &'static str) -> Self {
        Self { service, method }
    }

    /// Whether `path` is this method's request path.
    pub fn matches(&self, path: &str) -> bool {
        path.strip_prefix('/')
            .and_then(|rest| rest.strip_prefix(self.service))
            .and_then(|rest| rest.strip_prefix('/'))
            == Some(self.method)
    }
}

/// Whether `path` calls a method of `service` (its full name).
pub fn in_service(path: &str, service: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|rest| rest.strip_prefix(service))
        .is_some_and(|rest| rest.starts_with('/'))
}

/// Methods callable without an access token. On these a token is optional
/// and an invalid one is ignored (a client refreshing its session
/// typically still sends the expired token).
pub const PUBLIC_METHODS: &[RpcMethod] = &[
    RpcMethod::new(AuthServiceServer::<()>::NAME, "Login"),
    RpcMethod::new(AuthServiceServer::<()>::NAME, "RefreshToken"),
    RpcMethod::new(UserServiceServer::<()>::NAME, "CreateUser"),
    RpcMethod::new(ApiKeyServiceServer::<()>::NAME, "VerifyApiKey"),
    // The reservation id is the credential.
    RpcMethod::new(ApiKeyServiceServer::<()>::NAME, "SettleReservation"),
    RpcMethod::new(ApiKeyServiceServer::<()>::NAME, "ReleaseReservation"),
    EXTERNAL_AUTHORIZATION_CHECK,
];

/// Envoy's external authorization Check: the API key in the checked
/// request is the credential, as for VerifyApiKey.
pub const EXTERNAL_AUTHORIZATION_CHECK: RpcMethod =
    RpcMethod::new(AuthorizationServer::<()>::NAME, "Check");

/// Whole services that never need a token: probes and reflection.
pub const PUBLIC_SERVICES: &[&str] = &[
    HealthServer::<()>::NAME,
    ReflectionV1::<()>::NAME,
    ReflectionV1Alpha::<()>::NAME,
];

fn is_public(path: &str) -> bool {
    PUBLIC_METHODS.iter().any(|method| method.matches(path))
        || PUBLIC_SERVICES
            .iter()
            .any(|service| in_service(path, service))
}

/// What a request's `authorization` entry amounts to; put into the
/// request's extensions by [`CredentialsGate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// No authorization entry.
    Absent,
    /// An access token with a valid signature, its session not yet checked.
    Token {
        user_id: UserId,
        session_id: SessionId,
    },
    /// A well-formed service account token (its digest), not yet checked.
    /// Anyone can make one up, so it is counted against the client's
    /// network, as a call without a token is.
    ServiceAccount([u8; 32]),
    /// Refused with this client-safe reason (ignored on public RPCs).
    Invalid(&'static str),
}

impl Credentials {
    /// The user a correctly signed token names, whether or not its session
    /// is still live.
    pub fn claimed_user(&self) -> Option<UserId> {
        match self {
            Credentials::Token { user_id, .. } => Some(*user_id),
            Credentials::Absent | Credentials::ServiceAccount(_) | Credentials::Invalid(_) => None,
        }
    }
}

/// Reads the bearer token, if any, into [`Credentials`] for the layers
/// inside (used as `GateLayer(CredentialsGate::new(keys))`).
#[derive(Clone)]
pub struct CredentialsGate {
    keys: Arc<TokenKeys>,
}

impl CredentialsGate {
    pub fn new(keys: Arc<TokenKeys>) -> Self {
        Self { keys }
    }
}

impl Gate for CredentialsGate {
    fn check<B>(&self, request: &mut http::Request<B>) -> Check {
        let credentials = match presented_token(&self.keys, request.headers()) {
            Ok(credentials) => credentials,
            // Two authorization entries are ambiguous: which one would a
            // proxy in front have checked? Refused even on public RPCs.
            Err(Ambiguous) => {
                return Check::Now(Err(tonic::Status::unauthenticated(
                    "send one `authorization` metadata entry, not several",
                )))
            }
        };
        request.extensions_mut().insert(credentials);
        Check::Now(Ok(()))
    }
}

/// Wraps services in [`AuthMiddleware`]. Must sit inside the
/// [`CredentialsGate`]: a request it did not see has no credentials.
#[derive(Clone)]
pub struct AuthLayer {
    sessions: Sessions,
    service_accounts: ServiceAccounts,
}

impl AuthLayer {
    pub fn new(sessions: Sessions, service_accounts: ServiceAccounts) -> Self {
        Self {
            sessions,
            service_accounts,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthMiddleware {
            inner,
            sessions: self.sessions.clone(),
            service_accounts: self.service_accounts.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct AuthMiddleware<S> {
    inner: S,
    sessions: Sessions,
    service_accounts: ServiceAccounts,
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
        let public = is_public(request.uri().path());
        let credentials = request
            .extensions()
            .get::<Credentials>()
            .copied()
            // Fail closed if the layers were wired without CredentialsGate.
            .unwrap_or(Credentials::Invalid("no credentials were read"));
        let address = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .map(|addr| addr.ip());
        let request_id = request.extensions().get::<RequestId>().cloned();
        let sessions = self.sessions.clone();
        let service_accounts = self.service_accounts.clone();
        // The clone is ready only if polled; swap so the polled one serves.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let authenticated = match credentials {
                Credentials::Token { user_id, session_id } => match sessions.live(session_id).await {
                    Ok(Some(session)) if session.user_id == user_id => Ok(Some(Caller {
                        principal: Principal::User(session.user_id),
                        role: session.role,
                        address,
                        request_id,
                        email: Some(session.email),
                    })),
                    Ok(_) => Err("the session has ended (signed out, password changed or user deleted); log in again"),
                    // Fail closed: an unknown session state is no session.
                    Err(error) => return Ok(tonic::Status::from(error).into_http()),
                },
                // Anyone can make up a well-formed token, and the public
                // RPCs (VerifyApiKey, Check) are not rate limited: looking
                // it up there would let a flood of them reach the database.
                // No public RPC needs a service account as its caller.
                Credentials::ServiceAccount(_) if public => Ok(None),
                Credentials::ServiceAccount(digest) => match service_accounts.live(digest).await {
                    Ok(Some(account)) => {
                        service_accounts.record_use(account.id);
                        Ok(Some(Caller {
                            principal: Principal::ServiceAccount(ServiceAccountCaller {
                                id: account.id,
                                organization: account.organization_id,
                                role: account.role(),
                                name: account.name.as_str().into(),
                            }),
                            role: Role::User,
                            address,
                            request_id,
                            email: None,
                        }))
                    }
                    Ok(None) => Err("the service account token is unknown, revoked or expired"),
                    Err(error) => return Ok(tonic::Status::from(error).into_http()),
                },
                Credentials::Absent => Ok(None),
                Credentials::Invalid(reason) => Err(reason),
            };
            match authenticated {
                Ok(Some(caller)) => {
                    tracing::Span::current()
                        .record("enduser.id", tracing::field::display(&caller.principal));
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

/// More than one authorization entry.
struct Ambiguous;

/// The credentials in `headers`; `Err` only for several authorization
/// entries.
fn presented_token(keys: &TokenKeys, headers: &http::HeaderMap) -> Result<Credentials, Ambiguous> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(Credentials::Absent);
    };
    if values.next().is_some() {
        return Err(Ambiguous);
    }
    let Ok(value) = value.to_str() else {
        return Ok(Credentials::Invalid(
            "authorization metadata is not valid text",
        ));
    };
    let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
    else {
        return Ok(Credentials::Invalid(
            "authorization metadata must be `Bearer <token>`",
        ));
    };
    if ServiceAccountToken::has_prefix(token) {
        return Ok(match ServiceAccountToken::is_well_formed(token) {
            true => Credentials::ServiceAccount(crate::domain::token_digest(token)),
            false => Credentials::Invalid("malformed service account token"),
        });
    }
    Ok(match keys.verify(token) {
        Ok((user_id, session_id)) => Credentials::Token {
            user_id,
            session_id,
        },
        Err(reason) => Credentials::Invalid(reason),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_rpcs_are_matched_by_their_full_path_only() {
        assert!(is_public("/chatbot.v1.AuthService/Login"));
        assert!(is_public("/chatbot.v1.ApiKeyService/VerifyApiKey"));
        assert!(is_public("/envoy.service.auth.v3.Authorization/Check"));
        assert!(is_public("/grpc.health.v1.Health/Check"));
        assert!(is_public(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_public("/chatbot.v1.AuthService/LoginX"));
        assert!(!is_public("/chatbot.v1.AuthService/Logout"));
        assert!(!is_public("/chatbot.v1.AuthServiceX/Login"));
        assert!(!is_public("/grpc.health.v1.HealthX/Check"));
        assert!(!is_public("chatbot.v1.AuthService/Login"));
    }
}
