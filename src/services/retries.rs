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
use crate::domain::{CreateRequestId, FieldViolation, WebhookSigner};
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

/// A retry's answer: what the first request created, found by the id it
/// recorded; FAILED_PRECONDITION, naming `what`, if it has been deleted
/// since.
pub async fn first_created<Id, T>(
    conn: &mut DbConnection,
    first: &CreateRequest,
    what: &str,
    parse: fn(&str, &str) -> Result<Id, FieldViolation>,
    find: impl AsyncFnOnce(&mut DbConnection, Id) -> diesel::QueryResult<Option<T>>,
) -> AppResult<T> {
    let id = parse("id", &first.resource_id).map_err(|_| deleted_since(what))?;
    find(conn, id).await?.ok_or_else(|| deleted_since(what))
}

/// The first request's resource is gone: a retry cannot answer with it.
pub fn deleted_since(what: &str) -> AppError {
    AppError::FailedPrecondition(format!(
        "the {what} this request created has been deleted since"
    ))
}

/// Where a create's shown-once secret comes from. With a request id, on a
/// server with SECRET_KEY, it is drawn from a stream seeded by SECRET_KEY
/// and a random salt kept with the request id (the secret itself is never
/// stored), so a retry can draw and show the same one; otherwise from the
/// OS generator, shown once only.
pub struct SecretSource<'a> {
    signer: Option<&'a WebhookSigner>,
    label: &'static [u8; 32],
    salt: Option<[u8; 16]>,
}

impl<'a> SecretSource<'a> {
    /// `label` names the kind of secret, so no two kinds share a stream.
    pub fn new(
        signer: Option<&'a WebhookSigner>,
        retry: Option<&RequestKey>,
        label: &'static [u8; 32],
    ) -> Self {
        let salt = retry.and(signer).map(|_| rand::random());
        Self {
            signer,
            label,
            salt,
        }
    }

    /// The salt to keep with the request id ([`claim`]).
    pub fn salt(&self) -> Option<&[u8]> {
        self.salt.as_ref().map(|salt| &salt[..])
    }

    /// The first request's generator: derived with a salt, else the OS's.
    pub fn first(&self) -> Box<dyn rand::RngCore + Send> {
        match (self.signer, &self.salt) {
            (Some(signer), Some(salt)) => Box::new(stream(signer, self.label, salt)),
            _ => Box::new(rand::rngs::OsRng),
        }
    }

    /// A retry's generator: the one the first request drew `what`'s secret
    /// from. FAILED_PRECONDITION where it cannot be derived again;
    /// `replace` says what to do instead.
    pub fn again(
        &self,
        first: &CreateRequest,
        what: &str,
        replace: &str,
    ) -> AppResult<rand_chacha::ChaCha20Rng> {
        match (self.signer, &first.secret_salt) {
            (Some(signer), Some(salt)) => Ok(stream(signer, self.label, salt)),
            _ => Err(AppError::FailedPrecondition(format!(
                "the first request created this {what} on a server without SECRET_KEY, so its \
                 secret was shown once only: {replace}"
            ))),
        }
    }
}

/// The retry's secret is not the one the first request showed: the
/// server's SECRET_KEY changed in between.
pub fn secret_changed(what: &str, replace: &str) -> AppError {
    AppError::FailedPrecondition(format!(
        "SECRET_KEY changed since the first request created this {what}, so its secret cannot \
         be shown again: {replace}"
    ))
}

fn stream(signer: &WebhookSigner, label: &[u8; 32], salt: &[u8]) -> rand_chacha::ChaCha20Rng {
    use rand_chacha::rand_core::SeedableRng;
    rand_chacha::ChaCha20Rng::from_seed(signer.derive(label, salt))
}
