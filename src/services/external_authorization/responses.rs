//! Envoy's answers: an allowed request with the headers the upstream gets,
//! or a denial with the HTTP status and body a client sees.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use envoy_types::ext_authz::v3::pb::{
    CheckResponse, HeaderAppendAction, HttpStatusCode, OkHttpResponse,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use prost::{EncodeError, Message};
use tonic::Status;

use super::{
    Decision, KeyHeaders, Throttle, EXTERNAL_ID_HEADER, METADATA_HEADER, REALM,
    RESERVATION_EXPIRY_HEADER, RESERVATION_ID_HEADER,
};
use crate::db::models::VerificationRecord;
use crate::domain::LimitScope;
use crate::services::encoded::{
    put_length_delimited_key, put_string_field, string_field_len, WriteAnswer,
};
use crate::verification::{CreditsLeft, IssuedReservation, Rejection};

/// Check's answer, written as bytes (see [`crate::services::encoded`]): an
/// allowed request's answer is the key's part, encoded once while its record
/// is cached, then this call's; any other is the whole message.
pub enum CheckAnswer {
    Allowed {
        /// `OkHttpResponse`'s and the dynamic metadata's fields about the
        /// key.
        key_part: [Bytes; 2],
        /// The headers that carried the key, which never reach the upstream.
        key_headers: KeyHeaders,
        /// The reservation's headers for the upstream; without one, a
        /// client's own headers of their names are removed.
        reservation: Option<OkHttpResponse>,
        /// The balances left, for a key or organization with credits.
        credits: Option<Struct>,
    },
    Message(CheckResponse),
}

impl WriteAnswer for CheckAnswer {
    fn write(self, buf: &mut impl BufMut) -> Result<(), EncodeError> {
        let (key_part, key_headers, reservation, credits) = match self {
            Self::Message(message) => return message.encode(buf),
            Self::Allowed {
                key_part,
                key_headers,
                reservation,
                credits,
            } => (key_part, key_headers, reservation, credits),
        };
        let [key_upstream, key_metadata] = key_part;
        let no_reservation = [RESERVATION_ID_HEADER, RESERVATION_EXPIRY_HEADER];
        let removed = || {
            let no_reservation = reservation.is_none().then_some(no_reservation);
            key_headers
                .names()
                .chain(no_reservation.into_iter().flatten())
        };
        let removed_len: usize = removed()
            .map(|name| string_field_len(OK_HEADERS_TO_REMOVE, name))
            .sum();
        let reservation_len = reservation.as_ref().map_or(0, Message::encoded_len);
        let credits_len = credits.as_ref().map_or(0, Message::encoded_len);

        // status: OK (code 0, no message), which encodes as an empty message.
        put_length_delimited_key(CHECK_STATUS, 0, buf);
        let upstream_len = key_upstream.len() + removed_len + reservation_len;
        put_length_delimited_key(CHECK_OK_RESPONSE, upstream_len, buf);
        buf.put_slice(&key_upstream);
        for name in removed() {
            put_string_field(OK_HEADERS_TO_REMOVE, name, buf);
        }
        if let Some(reservation) = &reservation {
            reservation.encode(buf)?;
        }
        let metadata_len = key_metadata.len() + credits_len;
        put_length_delimited_key(CHECK_DYNAMIC_METADATA, metadata_len, buf);
        buf.put_slice(&key_metadata);
        if let Some(credits) = &credits {
            credits.encode(buf)?;
        }
        Ok(())
    }
}

// CheckResponse's fields (envoy/service/auth/v3/external_auth.proto).
const CHECK_STATUS: u32 = 1;
const CHECK_OK_RESPONSE: u32 = 3;
const CHECK_DYNAMIC_METADATA: u32 = 4;
/// OkHttpResponse's `headers_to_remove`.
const OK_HEADERS_TO_REMOVE: u32 = 5;

impl From<Decision> for CheckAnswer {
    fn from(decision: Decision) -> Self {
        let message = match decision {
            Decision::Allow {
                record,
                credits_remaining,
                reservation,
                key_headers,
            } => return allowed(&record, credits_remaining, reservation, key_headers),
            Decision::Unauthenticated {
                presented,
                rejection,
            } => unauthenticated(presented, rejection),
            Decision::TooManyRequests(throttle) => too_many_requests(throttle),
            Decision::Forbidden(rejection) => forbidden(&rejection),
        };
        Self::Message(message)
    }
}

/// Headers Check sets replace a client's own: an x-chatbot-id the client
/// sent must not reach the upstream beside ours.
const REPLACE: Option<HeaderAppendAction> = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);

fn allowed(
    record: &VerificationRecord,
    credits_remaining: CreditsLeft,
    reservation: Option<IssuedReservation>,
    key_headers: KeyHeaders,
) -> CheckAnswer {
    let key_part = record.encoded.check.get_or_init(|| {
        let (upstream, metadata) = key_part(record);
        [
            upstream.encode_to_vec().into(),
            metadata.encode_to_vec().into(),
        ]
    });
    let reservation = reservation.map(|reservation| {
        let expires = reservation
            .expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut upstream = OkHttpResponseBuilder::new();
        upstream
            .add_header(
                RESERVATION_ID_HEADER,
                reservation.id.expose(),
                REPLACE,
                false,
            )
            .add_header(RESERVATION_EXPIRY_HEADER, expires, REPLACE, false);
        upstream.build()
    });
    let credits = [
        ("credits_remaining", credits_remaining.key),
        (
            "organization_credits_remaining",
            credits_remaining.organization,
        ),
    ];
    let credits = credits_remaining.spent().then(|| {
        let fields = credits
            .into_iter()
            .filter_map(|(key, remaining)| {
                let remaining = Value {
                    kind: Some(Kind::NumberValue(remaining? as f64)),
                };
                Some((key.to_owned(), remaining))
            })
            .collect();
        Struct { fields }
    });
    CheckAnswer::Allowed {
        key_part: key_part.clone(),
        key_headers,
        reservation,
        credits,
    }
}

/// What an allowed answer says about the key itself, the same at every call
/// while its record is cached: the upstream's headers and the dynamic
/// metadata.
fn key_part(record: &VerificationRecord) -> (OkHttpResponse, Struct) {
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
    let text = |value: String| Value {
        kind: Some(Kind::StringValue(value)),
    };
    let mut metadata: HashMap<String, Value> = granted
        .into_iter()
        .map(|(_, key, value)| (key.to_owned(), text(value)))
        .collect();
    // What the owner attached, for keys that carry any (a plain key's
    // answer is as it was): the external id, and the metadata as one JSON
    // object. A client's own headers of these names never reach the
    // upstream.
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
    (upstream.build(), Struct { fields: metadata })
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
