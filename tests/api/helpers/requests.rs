//! Requests that tests in several files send, built in one place.

use chatbot_backend::proto::{self, UserRole};
use prost_types::FieldMask;

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

/// UpdateUser of user `id`'s role, and of nothing else.
pub fn role_change(id: &str, role: UserRole) -> proto::UpdateUserRequest {
    proto::UpdateUserRequest {
        user: Some(proto::User {
            id: id.into(),
            role: role.into(),
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["role".into()],
        }),
        ..Default::default()
    }
}
