//! The rate limit as a gate (`crate::gate`) around every gRPC service. It sits
//! between `auth::CredentialsGate` and `auth::AuthLayer` (see
//! src/auth/layer.rs): it counts a request against the user its correctly
//! signed token names, or against the client's network without one, before
//! the session lookup, so a flood of tokens cannot buy itself database
//! lookups, and a caller over its budget hears RESOURCE_EXHAUSTED (with a
//! RetryInfo detail) whether or not its token would have been accepted.
//! Probes and reflection are not counted, and VerifyApiKey and Envoy's Check
//! are limited per key inside their handlers instead: one calling service or
//! gateway verifies many keys from one address.

use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;

use futures_util::FutureExt;

use super::{RateKey, RateLimits, Verdict};
use crate::auth::{
    in_service, Credentials, RpcMethod, EXTERNAL_AUTHORIZATION_CHECK, PUBLIC_SERVICES,
};
use crate::error::AppError;
use crate::gate::{Check, Gate};
use crate::proto::api_key_service_server::ApiKeyServiceServer;

/// Limited per API key in their handlers rather than here: a gateway checks
/// many clients' keys from one address.
const PER_KEY_LIMITED: &[RpcMethod] = &[
    RpcMethod::new(ApiKeyServiceServer::<()>::NAME, "VerifyApiKey"),
    // One per verified call, like VerifyApiKey, from the same gateways.
    RpcMethod::new(ApiKeyServiceServer::<()>::NAME, "SettleReservation"),
    RpcMethod::new(ApiKeyServiceServer::<()>::NAME, "ReleaseReservation"),
    EXTERNAL_AUTHORIZATION_CHECK,
];

fn is_exempt(path: &str) -> bool {
    PER_KEY_LIMITED.iter().any(|method| method.matches(path))
        || PUBLIC_SERVICES
            .iter()
            .any(|service| in_service(path, service))
}

/// Counts each request against its key (used as
/// `GateLayer(RateLimitGate::new(limits))`).
#[derive(Clone)]
pub struct RateLimitGate {
    limits: RateLimits,
}

impl RateLimitGate {
    pub fn new(limits: RateLimits) -> Self {
        Self { limits }
    }
}

impl Gate for RateLimitGate {
    fn check<B>(&self, request: &mut http::Request<B>) -> Check {
        let Some(key) = rate_key(request) else {
            return Check::Now(Ok(()));
        };
        match self.limits.verdict(key) {
            Verdict::Now(answer) => Check::Now(answer.map_err(exhausted)),
            Verdict::Later(answer) => Check::Later(answer.map(|a| a.map_err(exhausted)).boxed()),
        }
    }
}

fn exhausted(retry_after: std::time::Duration) -> tonic::Status {
    AppError::ResourceExhausted {
        message: "rate limit exceeded; retry later".into(),
        retry_after,
    }
    .into()
}

/// Who `request` is counted against, if anyone.
fn rate_key<B>(request: &http::Request<B>) -> Option<RateKey> {
    if is_exempt(request.uri().path()) {
        return None;
    }
    let claimed_user = request
        .extensions()
        .get::<Credentials>()
        .and_then(Credentials::claimed_user);
    if let Some(user_id) = claimed_user {
        return Some(RateKey::User(user_id));
    }
    let address = request
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)?;
    Some(RateKey::address(address.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_reflection_and_verify_api_key_are_not_counted_here() {
        assert!(is_exempt("/grpc.health.v1.Health/Check"));
        assert!(is_exempt(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(is_exempt("/chatbot.v1.ApiKeyService/VerifyApiKey"));
        assert!(is_exempt("/envoy.service.auth.v3.Authorization/Check"));
        assert!(!is_exempt("/chatbot.v1.ApiKeyService/CreateApiKey"));
        assert!(!is_exempt("/chatbot.v1.AuthService/Login"));
    }
}
