//! What a verification answers, before VerifyApiKey or Check words it.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::db::models::VerificationRecord;
use crate::domain::{LimitScope, ReservationToken, UsageEvent};

/// A verification's answer: what a valid key grants (and the balance it
/// leaves, for a key with credits), or why it is not valid.
#[derive(Debug)]
pub enum Verification {
    Valid {
        record: Arc<VerificationRecord>,
        credits_remaining: CreditsLeft,
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
                    None if credits_remaining.spent() => (cost, 0),
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

/// The balances a VALID answer leaves: the key's and its organization's,
/// each `None` where there is none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreditsLeft {
    pub key: Option<i64>,
    pub organization: Option<i64>,
}

impl CreditsLeft {
    /// Whether the call spent from any balance.
    pub fn spent(&self) -> bool {
        self.key.is_some() || self.organization.is_some()
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
    /// The key's own rate limit, or its organization's (`scope`), is
    /// reached until `retry_at`.
    RateLimited {
        retry_at: DateTime<Utc>,
        scope: LimitScope,
    },
    /// The balance (the key's or its organization's: `scope`) does not
    /// cover the cost; the next refill, if any.
    UsageExceeded {
        remaining: i64,
        next_refill: Option<DateTime<Utc>>,
        scope: LimitScope,
    },
    /// The key has allowed networks, and the call's address is in none of
    /// them (or was not given).
    AddressNotAllowed,
    /// The key does not grant these required permissions.
    InsufficientPermissions {
        missing: Vec<String>,
    },
}
