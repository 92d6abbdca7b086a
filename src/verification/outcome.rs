//! What a verification answers, before VerifyApiKey or Check words it.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::db::models::VerificationRecord;
use crate::domain::{ReservationToken, UsageEvent};

/// A verification's answer: what a valid key grants (and the balance it
/// leaves, for a key with credits), or why it is not valid.
#[derive(Debug)]
pub enum Verification {
    Valid {
        record: Arc<VerificationRecord>,
        credits_remaining: Option<i64>,
        /// The reservation the call holds, when it asked for one.
        reservation: Option<IssuedReservation>,
    },
    /// A key we hold, refused.
    Refused(Arc<VerificationRecord>, Rejection),
    /// No key we hold.
    Invalid(Rejection),
}

impl Verification {
    /// The key this answer counts for in its usage history, and as what
    /// (a call that cost `cost`): none for a key we do not hold.
    pub(super) fn usage(&self, cost: i64) -> Option<(&VerificationRecord, UsageEvent)> {
        match self {
            Self::Valid {
                record,
                credits_remaining,
                reservation,
            } => {
                let (credits_spent, credits_reserved) = match reservation {
                    Some(reservation) => (0, reservation.reserved),
                    None if credits_remaining.is_some() => (cost, 0),
                    None => (0, 0),
                };
                Some((
                    record,
                    UsageEvent::Valid {
                        credits_spent,
                        credits_reserved,
                    },
                ))
            }
            Self::Refused(record, rejection) => {
                let event = match rejection {
                    Rejection::Revoked => UsageEvent::Revoked,
                    Rejection::Expired => UsageEvent::Expired,
                    Rejection::RateLimited { .. } => UsageEvent::RateLimited,
                    Rejection::UsageExceeded { .. } => UsageEvent::UsageExceeded,
                    Rejection::AddressNotAllowed => UsageEvent::AddressNotAllowed,
                    Rejection::InsufficientPermissions { .. } => {
                        UsageEvent::InsufficientPermissions
                    }
                    Rejection::Malformed | Rejection::NotFound => return None,
                };
                Some((record, event))
            }
            Self::Invalid(_) => None,
        }
    }
}

/// A reservation a VALID answer holds. Its id is shown in this answer only.
#[derive(Debug)]
pub struct IssuedReservation {
    pub id: ReservationToken,
    /// Credits held (nothing leaves the balance of a key without credits,
    /// but the amount is metered all the same).
    pub reserved: i64,
    pub expires_at: DateTime<Utc>,
}

/// Why a presented key is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not shaped like one of our keys; the database was not asked.
    Malformed,
    NotFound,
    Revoked,
    Expired,
    /// The key's own rate limit is reached until `retry_at`.
    RateLimited {
        retry_at: DateTime<Utc>,
    },
    /// The balance does not cover the cost; the next refill, if any.
    UsageExceeded {
        remaining: i64,
        next_refill: Option<DateTime<Utc>>,
    },
    /// The key has allowed networks, and the call's address is in none of
    /// them (or was not given).
    AddressNotAllowed,
    /// The key does not grant these required permissions.
    InsufficientPermissions {
        missing: Vec<String>,
    },
}
