//! Requests that tests in several files send, built in one place.

use chatbot_backend::proto::{self, UserRole};
use prost_types::FieldMask;

/// An update mask naming `paths`.
pub fn field_mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|path| (*path).to_owned()).collect(),
    })
}

/// UpdateChatbot of the fields of `changes` that `paths` name, on the
/// chatbot `changes.id`.
pub fn chatbot_update(changes: proto::Chatbot, paths: &[&str]) -> proto::UpdateChatbotRequest {
    proto::UpdateChatbotRequest {
        chatbot: Some(changes),
        update_mask: field_mask(paths),
    }
}

/// UpdateApiKey of the fields of `changes` that `paths` name, on the key
/// `changes.id`.
pub fn api_key_update(changes: proto::ApiKey, paths: &[&str]) -> proto::UpdateApiKeyRequest {
    proto::UpdateApiKeyRequest {
        api_key: Some(changes),
        update_mask: field_mask(paths),
        ..Default::default()
    }
}

/// UpdateUser of user `id`'s password, from `current_password` (which the
/// server checks) to `new_password`.
pub fn password_change(
    id: &str,
    current_password: &str,
    new_password: &str,
) -> proto::UpdateUserRequest {
    proto::UpdateUserRequest {
        user: Some(proto::User {
            id: id.into(),
            ..Default::default()
        }),
        update_mask: None,
        new_password: new_password.into(),
        current_password: current_password.into(),
    }
}

/// UpdateUser of user `id`'s email, and of nothing else.
pub fn email_change(id: &str, email: &str) -> proto::UpdateUserRequest {
    proto::UpdateUserRequest {
        user: Some(proto::User {
            id: id.into(),
            email: email.into(),
            ..Default::default()
        }),
        update_mask: field_mask(&["email"]),
        ..Default::default()
    }
}

/// UpdateUser of user `id`'s role, and of nothing else.
pub fn role_change(id: &str, role: UserRole) -> proto::UpdateUserRequest {
    proto::UpdateUserRequest {
        user: Some(proto::User {
            id: id.into(),
            role: role.into(),
            ..Default::default()
        }),
        update_mask: field_mask(&["role"]),
        ..Default::default()
    }
}
