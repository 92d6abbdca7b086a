//! Model rows to proto messages, and time conversions. The only place that
//! knows both shapes.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use crate::db::models;
use crate::domain::{self, Role};
use crate::error::FieldViolation;
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

pub fn role(role: Role) -> proto::UserRole {
    match role {
        Role::User => proto::UserRole::User,
        Role::Admin => proto::UserRole::Admin,
    }
}

pub fn user(row: models::User) -> proto::User {
    proto::User {
        id: row.id.to_string(),
        role: role(row.role()).into(),
        email: row.email,
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
    }
}

pub fn chatbot(row: models::Chatbot) -> proto::Chatbot {
    proto::Chatbot {
        id: row.id.to_string(),
        owner_id: row.owner_id.to_string(),
        name: row.name,
        llm_endpoint_url: row.llm_endpoint_url,
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
    }
}

pub fn api_key(row: models::ApiKey) -> proto::ApiKey {
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
