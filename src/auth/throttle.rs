//! Login throttling: a budget of password checks per email and per client
//! network in a fixed window, kept in the database every replica shares.
//!
//! A check is reserved before the password is hashed, in one transaction
//! for both subjects, so 40 concurrent guesses (or guesses spread over
//! replicas) cannot all be checked: each reservation counts at once, and
//! past the limit Login is refused before any hashing, which protects the
//! CPU too. A refused attempt reserves nothing. A right password gives its
//! reservation back, so the counts are the wrong passwords of the window
//! plus the checks in flight. Every place that checks a password the caller
//! presents spends from the same budgets: Login, and UpdateUser's
//! `current_password` (else a stolen access token would be an unthrottled
//! password oracle).
//!
//! The policy (OWASP Authentication Cheat Sheet, "Account Lockout"): the
//! per-email budget bounds guessing one account from any number of
//! addresses; the per-address budget bounds spraying many accounts from one
//! client. A spent budget unlocks itself when its window ends (no lockout
//! that needs an admin), and refusals do not extend it.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;
use sha2::{Digest, Sha256};

use super::client_network;
use crate::db::models::LoginAttempt;
use crate::db::retention::{purge_in_batches, PURGE_BATCH};
use crate::db::{Database, DbConnection};
use crate::error::{AppError, AppResult};

/// The shared budgets.
#[derive(Clone)]
pub struct LoginThrottle {
    db: Database,
    max_per_email: u32,
    max_per_address: u32,
    window: Duration,
}

/// Password checks reserved for one Login; see [`LoginThrottle::refund`].
#[must_use = "a successful login gives its reservation back"]
pub struct Reservation {
    windows: Vec<(Vec<u8>, DateTime<Utc>)>,
}

/// Subjects are stored as digests: fixed width, and the table does not
/// list who tried to log in.
fn subject(kind: &str, value: &str) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(kind.as_bytes());
    hasher.update(b":");
    hasher.update(value.as_bytes());
    hasher.finalize().to_vec()
}

impl LoginThrottle {
    pub fn new(db: Database, max_per_email: u32, max_per_address: u32, window: Duration) -> Self {
        Self {
            db,
            max_per_email,
            max_per_address,
            window,
        }
    }

    fn window_length(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::MAX)
    }

    /// Reserves one password check for `email` (normalised, as stored) from
    /// `address`, or
    /// RESOURCE_EXHAUSTED (with the time until the budget refills) when
    /// either budget is spent; UNAVAILABLE if the database cannot count, so
    /// an outage never lets guesses through unthrottled.
    pub async fn reserve(&self, email: &str, address: Option<IpAddr>) -> AppResult<Reservation> {
        let mut subjects = vec![(subject("email", email), self.max_per_email)];
        subjects.extend(address.map(|ip| {
            (
                subject("address", &client_network(ip).to_string()),
                self.max_per_address,
            )
        }));
        let now = Utc::now();
        let window = self.window_length();
        let window_ended_at = now
            .checked_sub_signed(window)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut conn = self.db.conn().await?;
        conn.transaction(|conn| {
            async move {
                let mut windows = Vec::with_capacity(subjects.len());
                let mut retry_after: Option<Duration> = None;
                for (subject, limit) in subjects {
                    let reserved =
                        LoginAttempt::reserve(conn, &subject, now, window_ended_at).await?;
                    if i64::from(reserved.attempts) > i64::from(limit) {
                        let refills_at = reserved.started.checked_add_signed(window).unwrap_or(now);
                        let wait = (refills_at - now).to_std().unwrap_or_default();
                        retry_after = Some(retry_after.unwrap_or_default().max(wait));
                    }
                    windows.push((subject, reserved.started));
                }
                match retry_after {
                    // Rolls the transaction back: a refused attempt counts nowhere.
                    Some(retry_after) => Err(AppError::ResourceExhausted {
                        message: "too many failed logins; retry later".into(),
                        retry_after: retry_after.max(Duration::from_secs(1)),
                    }),
                    None => Ok(Reservation { windows }),
                }
            }
            .scope_boxed()
        })
        .await
    }

    /// Gives back the reservation of a login whose password was right, in
    /// the transaction that starts its session (so on its connection).
    pub async fn refund(
        conn: &mut DbConnection,
        reservation: &Reservation,
    ) -> diesel::QueryResult<()> {
        for (subject, started) in &reservation.windows {
            LoginAttempt::refund(conn, subject, *started).await?;
        }
        Ok(())
    }

    /// Deletes ended windows, in batches like the other purges
    /// (`db::retention`); run periodically so the table stays small.
    pub async fn purge_ended(&self) -> anyhow::Result<usize> {
        let window_ended_at = Utc::now()
            .checked_sub_signed(self.window_length())
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        purge_in_batches(&self.db, |conn| {
            LoginAttempt::purge_ended(conn, window_ended_at, PURGE_BATCH).scope_boxed()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_of_different_kinds_never_collide() {
        assert_ne!(subject("email", "a@x.io"), subject("address", "a@x.io"));
        assert_eq!(subject("email", "a@x.io"), subject("email", "a@x.io"));
        assert_eq!(subject("email", "a@x.io").len(), 32);
    }
}
