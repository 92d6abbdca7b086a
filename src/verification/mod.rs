//! VerifyApiKey's decision, in one place: VerifyApiKey and Envoy's Check
//! both call [`KeyVerifier::verify`] and differ only in how they read the
//! request and word the answer. A verification runs these steps in order,
//! and stops at the first that decides:
//!
//! 1. **Shape.** A string that cannot be one of our keys is `Malformed`.
//!    Costs nothing: no hash, no lookup, no limit is spent.
//! 2. **Per-key-digest rate limit** (`RATE_LIMIT_PER_API_KEY`, the service's
//!    own protection, in process or in Redis). Spent before the lookup, so a
//!    flood of one key, known or not, is refused before it costs a query. An
//!    error (RESOURCE_EXHAUSTED), not an answer: the caller is throttled,
//!    the key is not judged.
//! 3. **Lookup** by SHA-256 digest through the cache
//!    ([`crate::hot_path::api_key_cache`]): a hit costs no query; a miss one
//!    indexed read, whose row (or absence) is then cached, unless the set of
//!    known keys ([`crate::hot_path::known_keys`]) says the key cannot
//!    exist. The cache holds rows, not verdicts, and never serves a row a
//!    committed change made stale. No row is `NotFound`.
//! 4. **Revocation and expiry**, judged on the row at every call, so a key
//!    expiring needs no invalidation: `Revoked`, `Expired`.
//! 5. **Restrictions** the key's owner set, judged before any limit so a
//!    refused call spends nothing: the call's `client_address` must be in
//!    the key's allowed networks, if it has any (`AddressNotAllowed`), and
//!    every required permission must be granted (`InsufficientPermissions`,
//!    naming those missing). A key with none skips this step.
//!
//!    Steps 6 and 7 use the limits and credits of the key's replacement
//!    while a rotation's grace period lasts: one budget, not one per key.
//! 6. **The key's own rate limit and its organization's** (set by their
//!    owners), counted together: `RateLimited`, with the time it resets and
//!    whose limit it was (a call refused by one counts in neither). Exact
//!    across replicas when Redis is configured. A limit in credits counts
//!    the call's `cost` rather than 1.
//! 7. **Credits**, for a key or organization that has them: `cost` is spent
//!    through the batches of [`crate::hot_path::credit_spends`], from both
//!    balances or neither; a balance short of `cost` is `UsageExceeded`
//!    (naming whose) and spends nothing. Never below zero, on any number of
//!    replicas. With `reserve`, `cost` is held
//!    instead: taken from the balance and recorded as a reservation in one
//!    transaction (a key without credits records one that holds nothing),
//!    later settled, released or expired (`services::api_keys`'s
//!    reservations).
//! 8. **Valid.** The last-used time and the answer's usage count are
//!    recorded in memory and written in batches, never per call.
//!
//! Every answer about a key we hold (valid or refused) is counted in its
//! usage history; answers about keys we do not hold are not.

mod outcome;

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};

pub use outcome::{CreditsLeft, IssuedReservation, Rejection, Verification};

use crate::db::models::{
    ApiKey, NewReservation, Reservation, ReservationState, VerificationRecord,
};
use crate::db::Database;
use crate::domain::{
    missing_permissions, ApiKeyDigest, KeyRateLimit, LimitScope, ReservationEvent,
    ReservationToken, VerifyApiKey,
};
use crate::error::{AppError, AppResult};
use crate::hot_path::api_key_cache::Lookup;
use crate::hot_path::batch_queue::BatchSettings;
use crate::hot_path::known_keys::Presence;
use crate::hot_path::{
    ApiKeyCache, CreditSpends, Finish, Hold, KnownKeys, LastUsedRecorder, SpendOutcome,
    UsageRecorder,
};
use crate::rate_limit::{RateKey, RateLimits};

/// What a verification reads and records through; built once at start.
pub struct KeyVerifier {
    db: Database,
    cache: Arc<ApiKeyCache>,
    known_keys: Arc<KnownKeys>,
    rate_limits: RateLimits,
    credit_spends: CreditSpends,
    /// How long a reservation holds before it is charged as reserved.
    reservation_ttl: TimeDelta,
    last_used: LastUsedRecorder,
    usage: UsageRecorder,
}

impl KeyVerifier {
    /// A verifier with nothing recorded yet; its credit spends batch as
    /// `spend_batches` says, and a reservation holds for `reservation_ttl`.
    pub fn new(
        db: Database,
        cache: Arc<ApiKeyCache>,
        known_keys: Arc<KnownKeys>,
        rate_limits: RateLimits,
        spend_batches: BatchSettings,
        reservation_ttl: std::time::Duration,
    ) -> Self {
        Self {
            credit_spends: CreditSpends::start(db.clone(), spend_batches),
            reservation_ttl: TimeDelta::from_std(reservation_ttl).unwrap_or(TimeDelta::MAX),
            db,
            cache,
            known_keys,
            rate_limits,
            last_used: LastUsedRecorder::default(),
            usage: UsageRecorder::default(),
        }
    }

    /// The last-used times recorded since the last flush, which the server
    /// writes in batches.
    pub fn last_used(&self) -> &LastUsedRecorder {
        &self.last_used
    }

    /// The usage counts recorded since the last flush, which the server
    /// adds to the store in batches.
    pub fn usage(&self) -> &UsageRecorder {
        &self.usage
    }

    /// Settles or releases a reservation (see [`CreditSpends::finish`]),
    /// in the batches the spends take, and counts it in usage history.
    pub async fn finish_reservation(&self, finish: Finish) -> AppResult<Option<Reservation>> {
        let finished = self.credit_spends.finish(finish).await?;
        if let Some(reservation) = &finished {
            let charged = reservation.charged.unwrap_or(0);
            let refunded = (reservation.reserved - charged).max(0);
            let event = match finish.state {
                ReservationState::Released => ReservationEvent::Released { refunded },
                _ => ReservationEvent::Settled { charged, refunded },
            };
            self.usage.record_reservation(
                reservation.api_key_id,
                reservation.chatbot_id,
                reservation.finished_at.unwrap_or_else(Utc::now),
                event,
            );
        }
        Ok(finished)
    }

    /// Runs the steps of the module's doc. Errors only when the per-digest
    /// rate limit is spent or the store is unreachable.
    pub async fn verify(&self, cmd: VerifyApiKey) -> AppResult<Verification> {
        let Some(secret) = &cmd.secret else {
            return Ok(Verification::Invalid(Rejection::Malformed));
        };
        let digest = secret.digest();
        if let Err(retry_after) = self.rate_limits.check(RateKey::api_key(&digest)).await {
            return Err(AppError::ResourceExhausted {
                message: "rate limit for this API key exceeded; retry later".into(),
                retry_after,
            });
        }
        let Some(record) = self.lookup(&digest, secret.issued_at()).await? else {
            return Ok(Verification::Invalid(Rejection::NotFound));
        };
        let now = Utc::now();
        let verification = self.judge(record, &cmd, now).await?;
        if let Some((record, event)) = verification.usage(cmd.cost) {
            self.usage.record(record.id, record.chatbot_id, now, event);
        }
        Ok(verification)
    }

    /// The key's row, from the cache or one indexed read (then cached,
    /// absence included), or none when the known keys rule it out (not
    /// cached: a flood of made-up keys must not push real ones out).
    async fn lookup(
        &self,
        digest: &ApiKeyDigest,
        issued_at: Option<i64>,
    ) -> AppResult<Option<Arc<VerificationRecord>>> {
        match self.cache.get(digest) {
            Lookup::Hit(record) => Ok(record),
            Lookup::Miss(generation) => {
                if self.known_keys.presence(digest, issued_at).await == Presence::Absent {
                    return Ok(None);
                }
                let mut conn = self.db.conn().await?;
                let record = ApiKey::find_for_verification(&mut conn, digest)
                    .await?
                    .map(Arc::new);
                drop(conn);
                self.cache.insert(digest, record.clone(), generation);
                Ok(record)
            }
        }
    }

    /// Steps 4 to 8 on a key we hold, at `now`.
    async fn judge(
        &self,
        record: Arc<VerificationRecord>,
        cmd: &VerifyApiKey,
        now: DateTime<Utc>,
    ) -> AppResult<Verification> {
        let cost = cmd.cost;
        if record.revoked {
            return Ok(Verification::Refused(record, Rejection::Revoked));
        }
        if record.expires_at.is_some_and(|t| t <= now) {
            return Ok(Verification::Refused(record, Rejection::Expired));
        }
        if let Some(rejection) = restricted(&record, cmd) {
            return Ok(Verification::Refused(record, rejection));
        }
        if let Some(rejection) = self.rate_limited(&record, cost, now).await {
            return Ok(Verification::Refused(record, rejection));
        }
        let reservation = cmd.reserve.then(|| {
            let id = ReservationToken::generate();
            // As the store keeps times (microseconds), so the answer and
            // the reservation read back later agree.
            let created_at = now.trunc_subsecs(6);
            let hold = Hold {
                token_hash: id.digest(),
                chatbot_id: record.chatbot_id,
                created_at,
                expires_at: created_at + self.reservation_ttl,
            };
            let issued = IssuedReservation {
                id,
                reserved: cost,
                expires_at: hold.expires_at,
            };
            (issued, hold)
        });
        let (reservation, hold) = match reservation {
            Some((issued, hold)) => (Some(issued), Some(hold)),
            None => (None, None),
        };
        let credits_remaining = if record.has_credits() {
            let id = record.limits_key_id;
            let organization = record
                .organization_has_credits
                .then_some(record.organization_id);
            let outcome = match hold {
                Some(hold) => {
                    self.credit_spends
                        .reserve(id, organization, cost, hold)
                        .await?
                }
                None => self.credit_spends.spend(id, organization, cost).await?,
            };
            match outcome {
                SpendOutcome::Spent { key, organization } => CreditsLeft { key, organization },
                SpendOutcome::Unlimited => CreditsLeft::default(),
                SpendOutcome::KeyGone => return Ok(Verification::Invalid(Rejection::NotFound)),
                SpendOutcome::Short {
                    remaining,
                    next_refill,
                    scope,
                } => {
                    return Ok(Verification::Refused(
                        record,
                        Rejection::UsageExceeded {
                            remaining,
                            next_refill,
                            scope,
                        },
                    ))
                }
            }
        } else {
            if let Some(hold) = hold {
                if !self.reserve_without_balance(&record, cost, hold).await? {
                    return Ok(Verification::Invalid(Rejection::NotFound));
                }
            }
            CreditsLeft::default()
        };
        self.last_used.record(record.id, now);
        Ok(Verification::Valid {
            record,
            credits_remaining,
            reservation,
        })
    }

    /// Step 6: the key's own rate limit and its organization's, counted
    /// together (a call refused by one counts in neither): the refusal, if
    /// any.
    async fn rate_limited(
        &self,
        record: &VerificationRecord,
        cost: i64,
        now: DateTime<Utc>,
    ) -> Option<Rejection> {
        let own = record.rate_limit().map(|limit| {
            (
                RateKey::OwnLimit(record.limits_key_id),
                limit,
                LimitScope::ApiKey,
            )
        });
        let shared = record.organization_rate_limit.map(|limit| {
            let key = RateKey::OrganizationLimit(record.organization_id);
            (key, limit, LimitScope::Organization)
        });
        let check =
            |(key, limit, _): (RateKey, KeyRateLimit, LimitScope)| (key, limit, limit.weight(cost));
        // Arrays of one or two, so that the common case allocates nothing.
        let ((retry_after, refusing), limits) = match (own, shared) {
            (None, None) => return None,
            (Some(one), None) | (None, Some(one)) => {
                let refused = self.rate_limits.check_own_limits([check(one)]).await;
                (refused.err()?, [one, one])
            }
            (Some(own), Some(shared)) => {
                let both = [check(own), check(shared)];
                let refused = self.rate_limits.check_own_limits(both).await;
                (refused.err()?, [own, shared])
            }
        };
        let (_, limit, scope) = limits[refusing];
        // A full bucket frees a call within one window, whatever a store
        // answered.
        let wait =
            TimeDelta::from_std(retry_after.min(limit.window())).unwrap_or(TimeDelta::zero());
        let retry_at = now.checked_add_signed(wait).unwrap_or(now);
        Some(Rejection::RateLimited { retry_at, scope })
    }

    /// Records a reservation of a key without credits: it holds nothing,
    /// but is settled and metered like any other. False when the key is
    /// gone (deleted since it was looked up).
    async fn reserve_without_balance(
        &self,
        record: &VerificationRecord,
        cost: i64,
        hold: Hold,
    ) -> AppResult<bool> {
        let reservation = NewReservation::new(
            hold.token_hash,
            record.limits_key_id,
            hold.chatbot_id,
            cost,
            false,
            hold.created_at,
            hold.expires_at,
        );
        let mut conn = self.db.conn().await?;
        match Reservation::insert_many(&mut conn, &[reservation]).await {
            Ok(_) => Ok(true),
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                _,
            )) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }
}

/// Step 5: what the key's restrictions refuse, if anything. A key without
/// grants allows every address and grants no permission.
fn restricted(record: &VerificationRecord, cmd: &VerifyApiKey) -> Option<Rejection> {
    let Some(grants) = &record.grants else {
        return (!cmd.required_permissions.is_empty()).then(|| {
            Rejection::InsufficientPermissions {
                missing: cmd
                    .required_permissions
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect(),
            }
        });
    };
    if !grants.networks.allow(cmd.client_address) {
        return Some(Rejection::AddressNotAllowed);
    }
    let missing = missing_permissions(&grants.permissions, &cmd.required_permissions);
    (!missing.is_empty()).then(|| Rejection::InsufficientPermissions {
        missing: missing.iter().map(|p| p.as_str().to_owned()).collect(),
    })
}
