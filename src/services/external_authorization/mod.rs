//! Envoy's external authorization API (`envoy.service.auth.v3.Authorization`),
//! so that Envoy's `ext_authz` filter, Istio's `envoyExtAuthzGrpc` provider
//! and the gateways built on them check a chatbot's API key on every request
//! with no code in the service behind them.
//!
//! Check is VerifyApiKey's check ([`crate::verification`]): the same
//! cache, revocation, per-key limits and credits, and the same usage history.
//! Only the request and the answer differ: the key is read from an HTTP
//! header, and the answer is an HTTP decision. A gRPC error (the store is
//! unreachable, a route's cost is out of range) is a failed check, which
//! Envoy treats as a denial unless told to fail open.

mod responses;

pub use responses::CheckAnswer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use envoy_types::pb::envoy::config::core::v3::HeaderMap;
use http::HeaderName;
use tonic::Request;

use super::encoded::{as_message, AnsweredMethod};
use super::{AppState, Origin, Rpc};
use crate::db::models::VerificationRecord;
use crate::domain::{
    parse_cost, parse_permissions, ApiKeySecret, LimitScope, VerifyApiKey, API_KEY_PREFIX,
};
use crate::error::{AppError, AppResult, FieldViolation};
use crate::verification::{CreditsLeft, IssuedReservation, Rejection, Verification};

/// The `context_extensions` entry a route sets to say what a call through
/// it spends from a key's credits.
pub const COST_EXTENSION: &str = "cost";

/// The route's `context_extensions` entry naming the permissions a call
/// needs, comma-separated.
pub const PERMISSIONS_EXTENSION: &str = "required_permissions";

/// The route's `context_extensions` entry that makes a call's cost a
/// reservation (`"true"`), settled by the upstream once it knows the real
/// cost.
pub const RESERVE_EXTENSION: &str = "reserve";

/// The upstream header carrying the reservation's id (a secret: the
/// upstream settles or releases with it; never in dynamic metadata, which
/// access logs print).
pub const RESERVATION_ID_HEADER: &str = "x-credit-reservation-id";
/// The upstream header carrying when the reservation expires (RFC 3339).
const RESERVATION_EXPIRY_HEADER: &str = "x-credit-reservation-expire-time";

/// The upstream header carrying a key's external id.
const EXTERNAL_ID_HEADER: &str = "x-api-key-external-id";
/// The upstream header carrying a key's metadata, as a JSON object.
const METADATA_HEADER: &str = "x-api-key-metadata";

/// The realm named in `WWW-Authenticate`.
const REALM: &str = "chatbot-backend";

/// The Authorization service.
pub struct ExternalAuthorization {
    state: Arc<AppState>,
    /// The header a client sends its key in (lower case, as Envoy sends
    /// header names).
    key_header: HeaderName,
}

impl ExternalAuthorization {
    pub fn new(state: Arc<AppState>, key_header: HeaderName) -> Self {
        Self { state, key_header }
    }

    async fn answer(&self, request: Request<CheckRequest>) -> Rpc<CheckAnswer> {
        let parse = |message| CheckKey::parse(message, &self.key_header);
        self.state.serve_public(request, parse, check).await
    }
}

/// The server serves Check through [`CheckMethod`]; this is the same answer
/// as a message.
#[tonic::async_trait]
impl Authorization for ExternalAuthorization {
    async fn check(&self, request: Request<CheckRequest>) -> Rpc<CheckResponse> {
        as_message(self.answer(request).await)
    }
}

/// The path [`CheckMethod`] serves.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Check as the server serves it: answers written as bytes.
#[derive(Clone)]
pub struct CheckMethod(pub Arc<ExternalAuthorization>);

impl AnsweredMethod for CheckMethod {
    type Request = CheckRequest;
    type Answer = CheckAnswer;

    async fn call(&self, request: Request<CheckRequest>) -> Rpc<CheckAnswer> {
        self.0.answer(request).await
    }
}

/// A Check, parsed: the verification to run and the request headers that
/// carried a key, which never reach the upstream.
#[derive(Debug)]
pub struct CheckKey {
    verify: VerifyApiKey,
    /// Whether the request carried anything in a key's place; a request
    /// without is told a key is missing rather than that it is invalid.
    presented: bool,
    key_headers: KeyHeaders,
}

/// The request headers that carried a key.
#[derive(Debug, Default)]
pub struct KeyHeaders {
    authorization: bool,
    named: Option<HeaderName>,
}

impl KeyHeaders {
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let authorization = self.authorization.then_some("authorization");
        authorization
            .into_iter()
            .chain(self.named.as_ref().map(HeaderName::as_str))
    }
}

impl CheckKey {
    /// The key is the `key_header` entry, else an `authorization: Bearer`
    /// token shaped like one of our keys (any other bearer token belongs to
    /// the upstream and is left alone). A header sent twice, or two
    /// different keys in the two headers, is malformed: which of two keys
    /// to check is not ours to guess.
    fn parse(request: CheckRequest, key_header: &HeaderName) -> AppResult<Self> {
        let attributes = request.attributes.unwrap_or_default();
        let cost = match attributes.context_extensions.get(COST_EXTENSION) {
            None => 1,
            Some(cost) => {
                let field = "attributes.context_extensions.cost";
                let cost = cost.parse().map_err(|_| {
                    AppError::from(FieldViolation::new(field, "must be a whole number"))
                })?;
                parse_cost(field, cost)?
            }
        };
        let reserve = match attributes.context_extensions.get(RESERVE_EXTENSION) {
            None => false,
            Some(flag) => match flag.as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(FieldViolation::new(
                        "attributes.context_extensions.reserve",
                        "must be true or false",
                    )
                    .into())
                }
            },
        };
        // The route names the permissions it needs, comma-separated.
        let required: Vec<String> = attributes
            .context_extensions
            .get(PERMISSIONS_EXTENSION)
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let required_permissions = parse_permissions(
            "attributes.context_extensions.required_permissions",
            &required,
        )?;
        // The downstream client's address, as Envoy saw it (its
        // xff_num_trusted_hops or original_ip_detection decide which).
        let client_address = attributes
            .source
            .as_ref()
            .and_then(|peer| peer.address.as_ref())
            .and_then(|address| match &address.address {
                Some(
                    envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(
                        socket,
                    ),
                ) => socket.address.parse().ok(),
                _ => None,
            });
        let headers = attributes
            .request
            .and_then(|request| request.http)
            .map(|http| RequestHeaders::new(http.headers, http.header_map))
            .unwrap_or_default();

        let bearer_key = headers
            .values("authorization")
            .filter_map(|value| bearer_token(value))
            .filter(|token| token.starts_with(API_KEY_PREFIX))
            .collect::<Vec<_>>();
        let header_key = headers.values(key_header.as_str()).collect::<Vec<_>>();
        let key_headers = KeyHeaders {
            authorization: !bearer_key.is_empty(),
            named: (!header_key.is_empty()).then(|| key_header.clone()),
        };
        let presented = match (header_key.as_slice(), bearer_key.as_slice()) {
            ([], []) => None,
            ([key], []) | ([], [key]) => Some(Some(*key)),
            ([key], [bearer]) if key == bearer => Some(Some(*key)),
            _ => Some(None),
        };
        Ok(Self {
            verify: VerifyApiKey {
                secret: presented.flatten().and_then(ApiKeySecret::parse),
                cost,
                client_address,
                required_permissions,
                reserve,
            },
            presented: presented.is_some(),
            key_headers,
        })
    }
}

/// The request's headers as Envoy sent them: a map of merged values, or
/// (with `encode_raw_headers`) a list in which a repeated header repeats.
#[derive(Default)]
struct RequestHeaders(Vec<(String, String)>);

impl RequestHeaders {
    fn new(merged: HashMap<String, String>, raw: Option<HeaderMap>) -> Self {
        let raw = raw.map(|map| map.headers).unwrap_or_default();
        let raw = raw.into_iter().map(|header| {
            let value = if header.raw_value.is_empty() {
                header.value
            } else {
                String::from_utf8_lossy(&header.raw_value).into_owned()
            };
            (header.key.to_ascii_lowercase(), value)
        });
        Self(merged.into_iter().chain(raw).collect())
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
    }
}

fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Check's decision, before it becomes Envoy's message.
pub enum Decision {
    Allow {
        record: Arc<VerificationRecord>,
        credits_remaining: CreditsLeft,
        reservation: Option<IssuedReservation>,
        key_headers: KeyHeaders,
    },
    /// No key, or not one that is valid now: 401.
    Unauthenticated {
        presented: bool,
        rejection: Rejection,
    },
    /// Rate-limited or out of credits: 429.
    TooManyRequests(Throttle),
    /// A valid key its restrictions refuse here (the address, or a
    /// permission the route needs): 403.
    Forbidden(Rejection),
}

/// What a 429 tells the client about when to come back.
pub struct Throttle {
    reason: &'static str,
    message: &'static str,
    retry_after: Option<Duration>,
    limit: Option<u32>,
    remaining: Option<i64>,
    /// Whose limit refused, for `x-limit-scope`.
    scope: Option<LimitScope>,
}

/// The operation: VerifyApiKey's check, its answer as a decision. Only a
/// store that cannot answer fails it.
pub async fn check(state: &AppState, _: &Origin, cmd: CheckKey) -> AppResult<Decision> {
    let CheckKey {
        verify,
        presented,
        key_headers,
    } = cmd;
    let verification = match state.verifier.verify(verify).await {
        Ok(verification) => verification,
        // The service's own per-key limit, which VerifyApiKey reports as an
        // error: for a gateway it is a 429 like any other.
        Err(AppError::ResourceExhausted { retry_after, .. }) => {
            return Ok(Decision::TooManyRequests(Throttle {
                reason: "rate_limited",
                message: "too many requests with this API key; retry later",
                retry_after: Some(retry_after),
                limit: None,
                remaining: None,
                scope: None,
            }))
        }
        Err(error) => return Err(error),
    };
    let (record, rejection) = match verification {
        Verification::Valid {
            record,
            credits_remaining,
            reservation,
        } => {
            return Ok(Decision::Allow {
                record,
                credits_remaining,
                reservation,
                key_headers,
            })
        }
        Verification::Refused(record, rejection) => (Some(record), rejection),
        Verification::Invalid(rejection) => (None, rejection),
    };
    let now = Utc::now();
    let until = |time: DateTime<Utc>| (time - now).to_std().unwrap_or_default();
    Ok(match rejection {
        Rejection::RateLimited { retry_at, scope } => {
            let (limit, message) = match scope {
                LimitScope::ApiKey => (
                    record.and_then(|record| record.rate_limit()),
                    "this API key's rate limit is reached; retry later",
                ),
                LimitScope::Organization => (
                    record.and_then(|record| record.organization_rate_limit),
                    "the rate limit of this API key's organization is reached; retry later",
                ),
            };
            Decision::TooManyRequests(Throttle {
                reason: "rate_limited",
                message,
                retry_after: Some(until(retry_at)),
                limit: limit.map(|limit| limit.calls()),
                remaining: Some(0),
                scope: Some(scope),
            })
        }
        Rejection::UsageExceeded {
            remaining,
            next_refill,
            scope,
        } => Decision::TooManyRequests(Throttle {
            reason: "credits_exhausted",
            message: match scope {
                LimitScope::ApiKey => "this API key's credits do not cover the call",
                LimitScope::Organization => {
                    "the credits of this API key's organization do not cover the call"
                }
            },
            retry_after: next_refill.map(until),
            limit: None,
            remaining: Some(remaining),
            scope: Some(scope),
        }),
        rejection @ (Rejection::AddressNotAllowed | Rejection::InsufficientPermissions { .. }) => {
            Decision::Forbidden(rejection)
        }
        rejection => Decision::Unauthenticated {
            presented,
            rejection,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_path_is_the_generated_servers() {
        use envoy_types::ext_authz::v3::pb::AuthorizationServer;
        use tonic::server::NamedService;

        use crate::proto::RpcRequest;

        let name = AuthorizationServer::<ExternalAuthorization>::NAME;
        assert_eq!(CHECK_PATH, format!("/{name}/{}", CheckRequest::METHOD));
    }

    #[test]
    fn only_a_bearer_scheme_yields_a_token() {
        assert_eq!(bearer_token("Bearer cbk_x"), Some("cbk_x"));
        assert_eq!(bearer_token("bearer  cbk_x "), Some("cbk_x"));
        assert_eq!(bearer_token("Basic cbk_x"), None);
        assert_eq!(bearer_token("cbk_x"), None);
    }
}
