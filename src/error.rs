//! The one error type of the service layer and its one mapping to
//! `tonic::Status`. Clients only ever see the restricted set of codes below;
//! causes of INTERNAL go to the log, never to the wire.

use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use crate::domain::FieldViolation;
use crate::domain::Precondition;

/// Violations of a request that belong to no single parsed field (an
/// update mask naming unknown paths, say), reported with the fields' own.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, violation: FieldViolation) {
        self.0.push(violation);
    }

    /// Keeps a part's violation, if it has one.
    pub fn check(&mut self, part: Result<(), FieldViolation>) {
        if let Err(violation) = part {
            self.push(violation);
        }
    }

    /// Every violation kept, or none.
    pub fn finish(self) -> AppResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AppError::InvalidArgument(self.0))
        }
    }
}

/// One parsed part of a request: a field's `Result`, or the [`Violations`]
/// found along the way.
pub trait Parsed {
    type Value;
    /// The value, or `None` after pushing every violation onto `violations`
    /// (at least one).
    fn take(self, violations: &mut Vec<FieldViolation>) -> Option<Self::Value>;
}

impl<T> Parsed for Result<T, FieldViolation> {
    type Value = T;

    fn take(self, violations: &mut Vec<FieldViolation>) -> Option<T> {
        self.map_err(|violation| violations.push(violation)).ok()
    }
}

impl Parsed for Violations {
    type Value = ();

    fn take(self, violations: &mut Vec<FieldViolation>) -> Option<()> {
        let clean = self.0.is_empty();
        violations.extend(self.0);
        clean.then_some(())
    }
}

/// A tuple of a request's [`Parsed`] parts, in request order.
pub trait ParsedRequest {
    type Values;
    fn all(self) -> AppResult<Self::Values>;
}

/// Every part's value, or every violation at once (in request order) so
/// the client can fix them all in one go. The values exist only when
/// nothing failed, so no caller can reach a field that did not parse.
pub fn parsed<P: ParsedRequest>(parts: P) -> AppResult<P::Values> {
    parts.all()
}

macro_rules! parsed_request {
    ($($part:ident: $type:ident),+) => {
        impl<$($type: Parsed),+> ParsedRequest for ($($type,)+) {
            type Values = ($($type::Value,)+);

            fn all(self) -> AppResult<Self::Values> {
                let mut violations = Vec::new();
                let ($($part,)+) = self;
                $(let $part = $part.take(&mut violations);)+
                match ($($part,)+) {
                    ($(Some($part),)+) => Ok(($($part,)+)),
                    _ => Err(AppError::InvalidArgument(violations)),
                }
            }
        }
    };
}

parsed_request!(a: A);
parsed_request!(a: A, b: B);
parsed_request!(a: A, b: B, c: C);
parsed_request!(a: A, b: B, c: C, d: D);
parsed_request!(a: A, b: B, c: C, d: D, e: E);
parsed_request!(a: A, b: B, c: C, d: D, e: E, f: F);
parsed_request!(a: A, b: B, c: C, d: D, e: E, f: F, g: G);
parsed_request!(a: A, b: B, c: C, d: D, e: E, f: F, g: G, h: H);
parsed_request!(a: A, b: B, c: C, d: D, e: E, f: F, g: G, h: H, i: I);

impl From<Precondition> for AppError {
    fn from(refused: Precondition) -> Self {
        AppError::FailedPrecondition(refused.0)
    }
}

impl From<FieldViolation> for AppError {
    fn from(violation: FieldViolation) -> Self {
        AppError::InvalidArgument(vec![violation])
    }
}

/// A parse that cannot fail (VerifyApiKey's: any key is an answer).
impl From<std::convert::Infallible> for AppError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid argument")]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A conditional write whose etag no longer matches (AIP-154): read
    /// again and retry.
    #[error("{0}")]
    Aborted(String),
    #[error("the caller may not do this")]
    PermissionDenied,
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{message}")]
    ResourceExhausted {
        message: String,
        retry_after: Duration,
    },
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        AppError::Internal(error.into())
    }

    /// The same error for another caller that shared the failed work (a
    /// batched read); the cause travels as text, which is all the log needs.
    pub fn duplicate(&self) -> Self {
        match self {
            AppError::InvalidArgument(violations) => AppError::InvalidArgument(violations.clone()),
            AppError::NotFound(what) => AppError::NotFound(what),
            AppError::AlreadyExists(message) => AppError::AlreadyExists(message.clone()),
            AppError::FailedPrecondition(message) => AppError::FailedPrecondition(message.clone()),
            AppError::Aborted(message) => AppError::Aborted(message.clone()),
            AppError::PermissionDenied => AppError::PermissionDenied,
            AppError::Unauthenticated(message) => AppError::Unauthenticated(message.clone()),
            AppError::ResourceExhausted {
                message,
                retry_after,
            } => AppError::ResourceExhausted {
                message: message.clone(),
                retry_after: *retry_after,
            },
            AppError::Unavailable(cause) => AppError::Unavailable(anyhow::anyhow!("{cause:#}")),
            AppError::Internal(cause) => AppError::Internal(anyhow::anyhow!("{cause:#}")),
        }
    }
}

impl From<DieselError> for AppError {
    fn from(error: DieselError) -> Self {
        match error {
            DieselError::NotFound => AppError::NotFound("resource"),
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                AppError::AlreadyExists("the resource already exists".into())
            }
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
                AppError::Unavailable(error.into())
            }
            DieselError::DatabaseError(_, ref info) if is_transient(info.message()) => {
                AppError::Unavailable(error.into())
            }
            other => AppError::Internal(other.into()),
        }
    }
}

/// Connection loss and statement timeouts surface from tokio-postgres as
/// "unknown" database errors, and so does SQLite's write lock held past the
/// busy timeout; their text is all that tells them apart.
fn is_transient(message: &str) -> bool {
    const TRANSIENT: &[&str] = &[
        "statement timeout",
        "connection closed",
        "connection reset",
        "broken pipe",
        "terminating connection",
        "the database system is",
        "error communicating with the server",
        "unexpected EOF",
        // SQLITE_BUSY and SQLITE_LOCKED: another writer held the lock for
        // the whole busy timeout; retrying later can succeed.
        "database is locked",
        "database table is locked",
    ];
    TRANSIENT.iter().any(|needle| message.contains(needle))
}

impl From<crate::db::PoolError> for AppError {
    fn from(error: crate::db::PoolError) -> Self {
        AppError::Unavailable(anyhow::anyhow!("database pool: {error}"))
    }
}

impl From<AppError> for Status {
    fn from(error: AppError) -> Self {
        match error {
            AppError::InvalidArgument(violations) => {
                let message = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                let mut details = ErrorDetails::new();
                for violation in violations {
                    details.add_bad_request_violation(violation.field, violation.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            AppError::NotFound(what) => Status::not_found(format!("{what} not found")),
            AppError::AlreadyExists(message) => Status::already_exists(message),
            AppError::FailedPrecondition(message) => Status::failed_precondition(message),
            AppError::Aborted(message) => Status::aborted(message),
            AppError::PermissionDenied => {
                Status::permission_denied("the caller may not access this resource")
            }
            AppError::Unauthenticated(message) => Status::unauthenticated(message),
            AppError::ResourceExhausted {
                message,
                retry_after,
            } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            AppError::Unavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "database unavailable");
                Status::unavailable("the database is unavailable; retry later")
            }
            AppError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// What handlers return.
pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::is_transient;

    #[test]
    fn lock_timeouts_and_lost_connections_are_transient_but_constraint_failures_are_not() {
        assert!(is_transient("database is locked"));
        assert!(is_transient("canceling statement due to statement timeout"));
        assert!(is_transient("connection closed"));
        assert!(!is_transient("UNIQUE constraint failed: users.email"));
        assert!(!is_transient("FOREIGN KEY constraint failed"));
    }
}
