//! Between proto messages and the service's own types: model rows to
//! resources, timestamps and durations both ways, update masks. The only
//! place that knows both shapes.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use crate::db::models;
use crate::domain::{self, Page, Role};
use crate::error::{FieldViolation, Violations};
use crate::proto;

pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A client-sent timestamp, within the range google.protobuf.Timestamp
/// documents (years 1 to 9999), which both stores hold.
pub fn parse_timestamp(field: &str, value: &Timestamp) -> Result<DateTime<Utc>, FieldViolation> {
    domain::parse_timestamp_parts(field, value.seconds, value.nanos)
}

/// A client-sent non-negative duration, within the range
/// google.protobuf.Duration documents; never panics, whatever the numbers.
pub fn parse_duration(
    field: &str,
    value: &prost_types::Duration,
) -> Result<std::time::Duration, FieldViolation> {
    domain::parse_duration_parts(field, value.seconds, value.nanos)
}

/// The paths of an update mask, each checked against the fields an update
/// may change; output-only and unknown paths are INVALID_ARGUMENT.
pub fn mask_paths<'a>(
    mask: Option<&'a prost_types::FieldMask>,
    updatable: &[&str],
    output_only: &[&str],
    violations: &mut Violations,
) -> Vec<&'a str> {
    let paths: Vec<&str> = mask
        .map(|mask| mask.paths.iter().map(String::as_str).collect())
        .unwrap_or_default();
    paths
        .into_iter()
        .filter(|path| {
            if updatable.contains(path) {
                true
            } else if output_only.contains(path) {
                violations.push(FieldViolation::new(
                    "update_mask",
                    format!("{path:?} is output only"),
                ));
                false
            } else {
                violations.push(FieldViolation::new(
                    "update_mask",
                    format!("{path:?} is not an updatable field; use one of {updatable:?}"),
                ));
                false
            }
        })
        .collect()
}

impl From<Role> for proto::UserRole {
    fn from(role: Role) -> Self {
        match role {
            Role::User => proto::UserRole::User,
            Role::Admin => proto::UserRole::Admin,
        }
    }
}

impl From<models::User> for proto::User {
    fn from(row: models::User) -> Self {
        proto::User {
            id: row.id.to_string(),
            role: proto::UserRole::from(row.role()).into(),
            email: row.email,
            create_time: Some(timestamp(row.created_at)),
            update_time: Some(timestamp(row.updated_at)),
        }
    }
}

impl From<models::Chatbot> for proto::Chatbot {
    fn from(row: models::Chatbot) -> Self {
        proto::Chatbot {
            id: row.id.to_string(),
            owner_id: row.owner_id.to_string(),
            name: row.name,
            llm_endpoint_url: row.llm_endpoint_url,
            create_time: Some(timestamp(row.created_at)),
            update_time: Some(timestamp(row.updated_at)),
        }
    }
}

impl From<models::ApiKey> for proto::ApiKey {
    fn from(row: models::ApiKey) -> Self {
        proto::ApiKey {
            id: row.id.0,
            chatbot_id: row.chatbot_id.to_string(),
            display_name: row.display_name,
            key_prefix: row.key_prefix,
            revoked: row.revoked,
            create_time: Some(timestamp(row.created_at)),
            expire_time: row.expires_at.map(timestamp),
            revoke_time: row.revoked_at.map(timestamp),
            last_used_time: row.last_used_at.map(timestamp),
        }
    }
}

/// Converts every row of a list.
pub fn all<T, P: From<T>>(rows: Vec<T>) -> Vec<P> {
    rows.into_iter().map(P::from).collect()
}

/// Responses that carry one resource: `Response.field <- Source`.
macro_rules! resource_responses {
    ($($response:ident . $field:ident <- $source:ty),* $(,)?) => {$(
        impl From<$source> for proto::$response {
            fn from(source: $source) -> Self {
                Self { $field: Some(source.into()) }
            }
        }
    )*};
}

resource_responses! {
    CreateUserResponse.user <- models::User,
    GetUserResponse.user <- models::User,
    UpdateUserResponse.user <- models::User,
    GetCurrentUserResponse.user <- models::User,
    CreateChatbotResponse.chatbot <- models::Chatbot,
    GetChatbotResponse.chatbot <- models::Chatbot,
    UpdateChatbotResponse.chatbot <- models::Chatbot,
    GetApiKeyResponse.api_key <- models::ApiKey,
    RevokeApiKeyResponse.api_key <- models::ApiKey,
}

/// List responses: `Response.items_field <- Row`, with the page token.
macro_rules! page_responses {
    ($($response:ident . $field:ident <- $row:ty),* $(,)?) => {$(
        impl From<Page<$row>> for proto::$response {
            fn from(page: Page<$row>) -> Self {
                Self { $field: all(page.items), next_page_token: page.next_page_token }
            }
        }
    )*};
}

page_responses! {
    ListUsersResponse.users <- models::User,
    ListChatbotsResponse.chatbots <- models::Chatbot,
    ListApiKeysResponse.api_keys <- models::ApiKey,
}

/// Responses with no fields, to operations that return nothing.
macro_rules! empty_responses {
    ($($response:ident),* $(,)?) => {$(
        impl From<()> for proto::$response {
            fn from((): ()) -> Self {
                Self {}
            }
        }
    )*};
}

empty_responses!(
    DeleteUserResponse,
    DeleteChatbotResponse,
    DeleteApiKeyResponse,
    LogoutResponse
);
