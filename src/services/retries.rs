//! Creates safe to retry (AIP-155). A create that names a `request_id`
//! records it first thing in its transaction ([`claim`]); a retry by the
//! same caller finds it and answers with what the first request created,
//! creating nothing. On PostgreSQL a retry that arrives while the first
//! attempt is still in flight (on any replica) waits at the insert for that
//! attempt to commit or roll back, so two attempts never both create.
//! Request ids are kept a day ([`crate::db::retention::REQUEST_ID_WINDOW`]).

use chrono::{DateTime, Utc};

use crate::auth::{Caller, Principal};
use crate::db::models::{CreateRequest, RequestKey};
use crate::db::DbConnection;
use crate::domain::{CreateRequestId, FieldViolation};
use crate::error::{AppError, AppResult};

/// The request's key: who made it, through which RPC, with which id.
pub fn request_key(caller: &Caller, method: &'static str, request: &CreateRequestId) -> RequestKey {
    let caller = match &caller.principal {
        Principal::User(id) => format!("user:{id}"),
        Principal::ServiceAccount(account) => format!("service_account:{}", account.id),
    };
    RequestKey {
        caller,
        method,
        request_id: request.id,
        request_digest: request.digest.to_vec(),
    }
}

/// Records the request, in the create's transaction, before it creates
/// anything: `None`, go on and create (then [`CreateRequest::created`]);
/// `Some`, a retry, with what the first request recorded. A request id
/// reused for a different request is INVALID_ARGUMENT.
pub async fn claim(
    conn: &mut DbConnection,
    key: &RequestKey,
    secret_salt: Option<&[u8]>,
    now: DateTime<Utc>,
) -> AppResult<Option<CreateRequest>> {
    match CreateRequest::claim(conn, key, secret_salt, now).await? {
        Some(first) if first.request_digest != key.request_digest => {
            Err(AppError::InvalidArgument(vec![FieldViolation::new(
                "request_id",
                "was used for a different request",
            )]))
        }
        first => Ok(first),
    }
}

/// The first request's resource is gone: a retry cannot answer with it.
pub fn deleted_since(what: &str) -> AppError {
    AppError::FailedPrecondition(format!(
        "the {what} this request created has been deleted since"
    ))
}
