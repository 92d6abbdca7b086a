//! Envoy's answers: an allowed request with the headers the upstream gets,
//! or a denial with the HTTP status and body a client sees.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{CheckResponse, HeaderAppendAction, HttpStatusCode};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use tonic::Status;

use super::{
    Decision, Throttle, EXTERNAL_ID_HEADER, METADATA_HEADER, REALM, RESERVATION_EXPIRY_HEADER,
    RESERVATION_ID_HEADER,
};
use crate::db::models::VerificationRecord;
use crate::domain::LimitScope;
use crate::verification::{CreditsLeft, IssuedReservation, Rejection};

impl From<Decision> for CheckResponse {
    fn from(decision: Decision) -> Self {
        match decision {
            Decision::Allow {
                record,
                credits_remaining,
                reservation,
                key_headers,
            } => allowed(&record, credits_remaining, reservation, key_headers),
            Decision::Unauthenticated {
                presented,
                rejection,
            } => unauthenticated(presented, rejection),
            Decision::TooManyRequests(throttle) => too_many_requests(throttle),
            Decision::Forbidden(rejection) => forbidden(&rejection),
        }
    }
}

/// Headers Check sets replace a client's own: an x-chatbot-id the client
/// sent must not reach the upstream beside ours.
const REPLACE: Option<HeaderAppendAction> = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);

fn allowed(
    record: &VerificationRecord,
    credits_remaining: CreditsLeft,
    reservation: Option<IssuedReservation>,
    key_headers: Vec<String>,
) -> CheckResponse {
    let granted = [
        ("x-chatbot-id", "chatbot_id", record.chatbot_id.to_string()),
        (
            "x-chatbot-owner-id",
            "chatbot_owner_id",
            record.owner_id.to_string(),
        ),
        ("x-api-key-id", "api_key_id", record.id.0.to_string()),
        (
            "x-llm-endpoint-url",
            "llm_endpoint_url",
            record.llm_endpoint_url.clone(),
        ),
    ];
    let mut upstream = OkHttpResponseBuilder::new();
    for (header, _, value) in &granted {
        upstream.add_header(*header, value, REPLACE, false);
    }
    for header in key_headers {
        upstream.remove_header(header);
    }
    // A client's own reservation headers never reach the upstream.
    match &reservation {
        Some(reservation) => {
            upstream.add_header(
                RESERVATION_ID_HEADER,
                reservation.id.expose(),
                REPLACE,
                false,
            );
            let expires = reservation
                .expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            upstream.add_header(RESERVATION_EXPIRY_HEADER, expires, REPLACE, false);
        }
        None => {
            upstream.remove_header(RESERVATION_ID_HEADER);
            upstream.remove_header(RESERVATION_EXPIRY_HEADER);
        }
    }
    let mut metadata: HashMap<String, Value> = granted
        .into_iter()
        .map(|(_, key, value)| {
            (
                key.to_owned(),
                Value {
                    kind: Some(Kind::StringValue(value)),
                },
            )
        })
        .collect();
    for (key, remaining) in [
        ("credits_remaining", credits_remaining.key),
        (
            "organization_credits_remaining",
            credits_remaining.organization,
        ),
    ] {
        if let Some(remaining) = remaining {
            let remaining = Value {
                kind: Some(Kind::NumberValue(remaining as f64)),
            };
            metadata.insert(key.to_owned(), remaining);
        }
    }
    // What the owner attached, for keys that carry any (a plain key's
    // answer is as it was): the external id, and the metadata as one JSON
    // object.
    // A client's own headers of these names never reach the upstream.
    let text = |value: String| Value {
        kind: Some(Kind::StringValue(value)),
    };
    let grants = record.grants.as_deref();
    match grants.and_then(|grants| grants.external_id.as_ref()) {
        Some(external_id) => {
            upstream.add_header(EXTERNAL_ID_HEADER, external_id, REPLACE, false);
            metadata.insert("external_id".to_owned(), text(external_id.clone()));
        }
        None => {
            upstream.remove_header(EXTERNAL_ID_HEADER);
        }
    }
    match grants.filter(|grants| !grants.metadata.entries().is_empty()) {
        Some(grants) => {
            let json = grants.metadata.to_json();
            upstream.add_header(METADATA_HEADER, &json, REPLACE, false);
            metadata.insert("metadata".to_owned(), text(json));
        }
        None => {
            upstream.remove_header(METADATA_HEADER);
        }
    }
    let mut response = CheckResponse::with_status(Status::ok(""));
    response
        .set_http_response(upstream.build())
        .set_dynamic_metadata(Some(Struct { fields: metadata }));
    response
}

/// 401, with the challenge RFC 6750 describes: without an error code when
/// no key was sent, `invalid_token` when the key is not valid.
fn unauthenticated(presented: bool, rejection: Rejection) -> CheckResponse {
    let (reason, message) = match rejection {
        _ if !presented => ("missing_api_key", "an API key is required"),
        Rejection::Revoked => ("api_key_revoked", "the API key is revoked"),
        Rejection::Expired => ("api_key_expired", "the API key has expired"),
        _ => ("invalid_api_key", "the API key is not valid"),
    };
    let challenge = if presented {
        format!(r#"Bearer realm="{REALM}", error="invalid_token", error_description="{message}""#)
    } else {
        format!(r#"Bearer realm="{REALM}""#)
    };
    denied(
        Status::unauthenticated(message),
        HttpStatusCode::Unauthorized,
        vec![("www-authenticate", challenge)],
        reason,
    )
}

/// 403: the key is valid but may not be used here. Names what was
/// missing, never the key.
fn forbidden(rejection: &Rejection) -> CheckResponse {
    let (reason, message) = match rejection {
        Rejection::InsufficientPermissions { missing } => (
            "insufficient_permissions",
            format!("the API key lacks the permissions {}", missing.join(", ")),
        ),
        _ => (
            "address_not_allowed",
            "the API key may not be used from this address".to_owned(),
        ),
    };
    denied(
        Status::permission_denied(message),
        HttpStatusCode::Forbidden,
        Vec::new(),
        reason,
    )
}

/// 429, with `Retry-After` and the RateLimit header fields
/// (draft-ietf-httpapi-ratelimit-headers) that apply.
fn too_many_requests(throttle: Throttle) -> CheckResponse {
    let mut headers = Vec::new();
    if let Some(retry_after) = throttle.retry_after {
        let seconds = whole_seconds(retry_after).to_string();
        headers.push(("retry-after", seconds.clone()));
        headers.push(("ratelimit-reset", seconds));
    }
    if let Some(limit) = throttle.limit {
        headers.push(("ratelimit-limit", limit.to_string()));
    }
    if let Some(remaining) = throttle.remaining {
        headers.push(("ratelimit-remaining", remaining.to_string()));
    }
    if let Some(scope) = throttle.scope {
        let scope = match scope {
            LimitScope::ApiKey => "api_key",
            LimitScope::Organization => "organization",
        };
        headers.push(("x-limit-scope", scope.to_owned()));
    }
    denied(
        Status::resource_exhausted(throttle.message),
        HttpStatusCode::TooManyRequests,
        headers,
        throttle.reason,
    )
}

/// A denial: `status` for Envoy, and for the client an HTTP `code` with
/// `headers` and a short JSON body naming `reason`.
fn denied(
    status: Status,
    code: HttpStatusCode,
    headers: Vec<(&'static str, String)>,
    reason: &str,
) -> CheckResponse {
    let body = serde_json::json!({ "error": reason, "message": status.message() });
    let mut client = DeniedHttpResponseBuilder::new();
    client
        .set_http_status(code)
        .set_body(body.to_string())
        .add_header("content-type", "application/json", REPLACE, false);
    for (name, value) in headers {
        client.add_header(name, value, REPLACE, false);
    }
    let mut response = CheckResponse::with_status(status);
    response.set_http_response(client.build());
    response
}

/// Seconds for `Retry-After`, rounded up: a client that waits exactly that
/// long must not be early.
fn whole_seconds(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(2001)), 3);
    }
}
