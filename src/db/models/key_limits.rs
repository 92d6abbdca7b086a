//! The `api_key_limits` table: a key's own rate limit and credits, one row
//! per key that has either. A balance is written only over the row it was
//! computed from (compare-and-set), so no number of concurrent callers on
//! any number of replicas takes a balance below zero.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::{AsChangeset, ExpressionMethods, Insertable, QueryDsl, Queryable, Selectable};

use super::ApiKey;
use crate::db::schema::api_key_limits;
use crate::db::sql_types::Timestamp;
use crate::db::DbConnection;
use crate::domain::{
    ApiKeyId, CreditsEdit, CreditsSetting, CreditsState, KeyRateLimit, LimitsUpdate, Precondition,
    RateUnit, Refill,
};

/// A row of `api_key_limits`.
#[derive(Debug, Clone, Copy, Queryable, Selectable)]
#[diesel(table_name = api_key_limits, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct KeyLimits {
    pub api_key_id: ApiKeyId,
    rate_limit_calls: Option<i64>,
    rate_limit_window_ms: Option<i64>,
    credits_remaining: Option<i64>,
    credits_refill_amount: Option<i64>,
    credits_refill_interval_ms: Option<i64>,
    credits_refilled_at: Option<DateTime<Utc>>,
    #[diesel(select_expression = api_key_limits::rate_limit_unit.eq(RateUnit::Credits.as_str()))]
    #[diesel(select_expression_type = diesel::dsl::Eq<api_key_limits::rate_limit_unit, &'static str>)]
    rate_limit_in_credits: bool,
    credits_low_threshold: Option<i64>,
}

/// A row type's `rate_limit()` and `credits()`, read from its limit
/// columns (a key's row and an organization's name them alike).
macro_rules! limits_from_columns {
    ($row:ty) => {
        impl $row {
            fn stored(&self) -> $crate::db::models::key_limits::StoredLimits {
                $crate::db::models::key_limits::StoredLimits {
                    rate_limit_calls: self.rate_limit_calls,
                    rate_limit_window_ms: self.rate_limit_window_ms,
                    rate_limit_in_credits: self.rate_limit_in_credits,
                    credits_remaining: self.credits_remaining,
                    credits_refill_amount: self.credits_refill_amount,
                    credits_refill_interval_ms: self.credits_refill_interval_ms,
                    credits_refilled_at: self.credits_refilled_at,
                }
            }

            pub fn rate_limit(&self) -> Option<$crate::domain::KeyRateLimit> {
                self.stored().rate_limit()
            }

            /// The stored credits (read them as of a moment with
            /// [`CreditsState::as_of`](crate::domain::CreditsState::as_of));
            /// `None` means unlimited.
            pub fn credits(&self) -> Option<$crate::domain::CreditsState> {
                self.stored().credits()
            }

            /// The low threshold of the credits; `None`: none.
            pub fn low_threshold(&self) -> Option<i64> {
                self.credits_low_threshold
            }
        }
    };
}
pub(super) use limits_from_columns;

/// The limit columns, as a key's and an organization's rows both hold
/// them.
pub(super) struct StoredLimits {
    pub rate_limit_calls: Option<i64>,
    pub rate_limit_window_ms: Option<i64>,
    pub rate_limit_in_credits: bool,
    pub credits_remaining: Option<i64>,
    pub credits_refill_amount: Option<i64>,
    pub credits_refill_interval_ms: Option<i64>,
    pub credits_refilled_at: Option<DateTime<Utc>>,
}

impl StoredLimits {
    pub fn rate_limit(&self) -> Option<KeyRateLimit> {
        let unit = match self.rate_limit_in_credits {
            true => RateUnit::Credits,
            false => RateUnit::Calls,
        };
        KeyRateLimit::from_stored(
            self.rate_limit_calls?,
            self.rate_limit_window_ms?,
            unit.as_str(),
        )
    }

    /// The stored credits (read them as of a moment with
    /// [`CreditsState::as_of`]); `None` means unlimited.
    pub fn credits(&self) -> Option<CreditsState> {
        let refill = match (
            self.credits_refill_amount,
            self.credits_refill_interval_ms,
            self.credits_refilled_at,
        ) {
            (Some(amount), Some(interval_ms), Some(at)) => {
                Refill::from_stored(amount, interval_ms).map(|refill| (refill, at))
            }
            _ => None,
        };
        Some(CreditsState {
            remaining: self.credits_remaining?,
            refill,
        })
    }
}

limits_from_columns!(KeyLimits);

impl KeyLimits {
    pub async fn find(
        conn: &mut DbConnection,
        id: ApiKeyId,
    ) -> diesel::QueryResult<Option<KeyLimits>> {
        use diesel::SelectableHelper;
        first_row!(
            conn,
            api_key_limits::table
                .find(id)
                .select(KeyLimits::as_select())
        )
    }

    pub async fn find_many(
        conn: &mut DbConnection,
        ids: &[ApiKeyId],
    ) -> diesel::QueryResult<Vec<KeyLimits>> {
        use diesel::SelectableHelper;
        all_rows!(
            conn,
            api_key_limits::table
                .filter(api_key_limits::api_key_id.eq_any(ids))
                .select(KeyLimits::as_select())
        )
    }

    /// Applies `changes` to the key's row, creating it if the key had no
    /// limits. The caller holds the key's lock (two creations would clash).
    pub async fn apply(
        conn: &mut DbConnection,
        id: ApiKeyId,
        changes: &KeyLimitChanges,
    ) -> diesel::QueryResult<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let updated = update_rows!(conn, api_key_limits::table.find(id), changes)?;
        if updated == 0 {
            let new = changes.as_new(id);
            crate::db::db_run!(conn => {
                diesel_async::RunQueryDsl::execute(
                    diesel::insert_into(api_key_limits::table).values(&new),
                    conn,
                )
                .await
            })?;
        }
        Ok(())
    }

    /// The rows of `ids` that exist, locked until the transaction ends,
    /// in id order (so that concurrent batches on any replica lock in the
    /// same order and cannot deadlock).
    pub async fn lock_many(
        conn: &mut DbConnection,
        ids: &[ApiKeyId],
    ) -> diesel::QueryResult<Vec<KeyLimits>> {
        use diesel::SelectableHelper;
        use diesel_async::RunQueryDsl;
        let rows = api_key_limits::table
            .filter(api_key_limits::api_key_id.eq_any(ids))
            .order(api_key_limits::api_key_id);
        match conn {
            DbConnection::Postgres(conn) => {
                rows.select(KeyLimits::as_select())
                    .for_update()
                    .load(&mut **conn)
                    .await
            }
            // SQLite has no row locks; its transaction holds the one write
            // lock from its BEGIN (`DbConnection::transaction`).
            DbConnection::Sqlite(conn) => {
                rows.select(KeyLimits::as_select()).load(&mut **conn).await
            }
        }
    }

    /// Writes balances computed from rows as they were read, each only if
    /// its row still holds what it was computed from (every column a
    /// spend reads): returns the keys written. Under
    /// [`lock_many`](Self::lock_many) that is all of them; without a lock
    /// a row another batch or replica changed since is left alone, and its
    /// spends are settled again on the row as it is now.
    ///
    /// One statement on PostgreSQL, which also locks its rows in id order
    /// first (two batches over the same keys cannot deadlock), and stays
    /// prepared on the connection: no round trip beyond its own.
    pub async fn write_balances(
        conn: &mut DbConnection,
        balances: &[Balance],
    ) -> diesel::QueryResult<Vec<ApiKeyId>> {
        use diesel_async::RunQueryDsl;
        if balances.is_empty() {
            return Ok(Vec::new());
        }
        match conn {
            DbConnection::Postgres(conn) => {
                let written: Vec<i64> = WriteBalances::new(balances).load(&mut **conn).await?;
                Ok(written.into_iter().map(ApiKeyId).collect())
            }
            // SQLite is only ever written under `lock_many`, which holds
            // the whole database: every row is as it was read.
            DbConnection::Sqlite(conn) => {
                let conn: &mut crate::db::SqliteAsyncConnection = conn;
                for balance in balances {
                    let row = api_key_limits::table.find(balance.id);
                    match balance.refilled_at {
                        Some(at) => {
                            diesel::update(row)
                                .set((
                                    api_key_limits::credits_remaining.eq(balance.remaining),
                                    api_key_limits::credits_refilled_at.eq(Timestamp(at)),
                                ))
                                .execute(conn)
                                .await?
                        }
                        None => {
                            diesel::update(row)
                                .set(api_key_limits::credits_remaining.eq(balance.remaining))
                                .execute(conn)
                                .await?
                        }
                    };
                }
                Ok(balances.iter().map(|balance| balance.id).collect())
            }
        }
    }

    /// This row after `balance` was written to it.
    pub fn with_balance(&self, balance: &Balance) -> KeyLimits {
        KeyLimits {
            credits_remaining: Some(balance.remaining),
            credits_refilled_at: balance.refilled_at.or(self.credits_refilled_at),
            ..*self
        }
    }
}

/// A balance to write: the new balance, the new refill time if a refill
/// happened, and the row it was computed from.
#[derive(Debug, Clone, Copy)]
pub struct Balance {
    pub id: ApiKeyId,
    pub remaining: i64,
    pub refilled_at: Option<DateTime<Utc>>,
    pub was: KeyLimits,
}

/// [`KeyLimits::write_balances`]'s statement on PostgreSQL. A query of
/// its own rather than `sql_query`, which diesel prepares anew on every
/// call (one more round trip); this one has a static query id, so each
/// connection prepares it once.
#[derive(diesel::query_builder::QueryId)]
struct WriteBalances {
    ids: Vec<i64>,
    remaining: Vec<i64>,
    refilled_at: Vec<Option<DateTime<Utc>>>,
    was_remaining: Vec<Option<i64>>,
    was_refilled_at: Vec<Option<DateTime<Utc>>>,
    was_refill_amount: Vec<Option<i64>>,
    was_refill_interval_ms: Vec<Option<i64>>,
}

impl WriteBalances {
    /// The balances in key order, the order their rows are locked in.
    fn new(balances: &[Balance]) -> Self {
        let mut sorted: Vec<&Balance> = balances.iter().collect();
        sorted.sort_unstable_by_key(|balance| balance.id);
        let balances = sorted;
        Self {
            ids: balances.iter().map(|b| b.id.0).collect(),
            remaining: balances.iter().map(|b| b.remaining).collect(),
            refilled_at: balances.iter().map(|b| b.refilled_at).collect(),
            was_remaining: balances.iter().map(|b| b.was.credits_remaining).collect(),
            was_refilled_at: balances.iter().map(|b| b.was.credits_refilled_at).collect(),
            was_refill_amount: balances
                .iter()
                .map(|b| b.was.credits_refill_amount)
                .collect(),
            was_refill_interval_ms: balances
                .iter()
                .map(|b| b.was.credits_refill_interval_ms)
                .collect(),
        }
    }
}

impl diesel::query_builder::Query for WriteBalances {
    type SqlType = diesel::sql_types::BigInt;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for WriteBalances {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Nullable, Timestamptz};
        out.push_sql(
            "UPDATE api_key_limits AS l \
             SET credits_remaining = v.remaining, \
                 credits_refilled_at = COALESCE(v.refilled_at, l.credits_refilled_at) \
             FROM unnest(",
        );
        out.push_bind_param::<Array<BigInt>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.remaining)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Timestamptz>>, _>(&self.refilled_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.was_remaining)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Timestamptz>>, _>(&self.was_refilled_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.was_refill_amount)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.was_refill_interval_ms)?;
        // Each row is found by its key (an index probe) and locked in the
        // order of `ids`, which is sorted, then updated through its
        // locked version's ctid: no statement here reads the whole table.
        // A join on the key instead let PostgreSQL choose to scan it (twice
        // per batch while it was small), which cost more than the batch.
        // A row updated and committed after this statement began is locked
        // at its new version, which this statement cannot see: it is left
        // alone, like any row that no longer holds what was read.
        out.push_sql(
            ") AS v(id, remaining, refilled_at, was_remaining, was_refilled_at, \
                    was_refill_amount, was_refill_interval_ms) \
             CROSS JOIN LATERAL (SELECT k.ctid AS tid FROM api_key_limits AS k \
                                 WHERE k.api_key_id = v.id FOR UPDATE) AS k \
             WHERE l.ctid = k.tid \
               AND l.api_key_id = v.id \
               AND l.credits_remaining IS NOT DISTINCT FROM v.was_remaining \
               AND l.credits_refilled_at IS NOT DISTINCT FROM v.was_refilled_at \
               AND l.credits_refill_amount IS NOT DISTINCT FROM v.was_refill_amount \
               AND l.credits_refill_interval_ms IS NOT DISTINCT FROM v.was_refill_interval_ms \
             RETURNING l.api_key_id",
        );
        Ok(())
    }
}

/// A key and its limits, as the API shows them.
#[derive(Debug, Clone)]
pub struct KeyWithLimits {
    pub key: ApiKey,
    pub limits: Option<KeyLimits>,
}

impl KeyWithLimits {
    pub async fn load(conn: &mut DbConnection, key: ApiKey) -> diesel::QueryResult<Self> {
        let limits = KeyLimits::find(conn, key.id).await?;
        Ok(Self { key, limits })
    }

    /// Each key with its limits, in one more query for all of them.
    pub async fn load_all(
        conn: &mut DbConnection,
        keys: Vec<ApiKey>,
    ) -> diesel::QueryResult<Vec<Self>> {
        let ids: Vec<ApiKeyId> = keys.iter().map(|key| key.id).collect();
        let mut limits: HashMap<ApiKeyId, KeyLimits> = KeyLimits::find_many(conn, &ids)
            .await?
            .into_iter()
            .map(|limits| (limits.api_key_id, limits))
            .collect();
        Ok(keys
            .into_iter()
            .map(|key| {
                let limits = limits.remove(&key.id);
                Self { key, limits }
            })
            .collect())
    }
}

/// Changes to a key's limits: each `None` leaves a column alone,
/// `Some(None)` clears it.
#[derive(Debug, Default, Clone, Copy, AsChangeset)]
#[diesel(table_name = api_key_limits)]
pub struct KeyLimitChanges {
    pub(super) rate_limit_calls: Option<Option<i64>>,
    pub(super) rate_limit_window_ms: Option<Option<i64>>,
    pub(super) rate_limit_unit: Option<&'static str>,
    pub(super) credits_remaining: Option<Option<i64>>,
    pub(super) credits_refill_amount: Option<Option<i64>>,
    pub(super) credits_refill_interval_ms: Option<Option<i64>>,
    pub(super) credits_refilled_at: Option<Option<Timestamp>>,
    pub(super) credits_low_threshold: Option<Option<i64>>,
    pub(super) credits_low_noticed: Option<bool>,
    pub(super) credits_exhausted_noticed: Option<bool>,
}

/// A row to insert: the changes applied to a key without limits.
#[derive(Insertable)]
#[diesel(table_name = api_key_limits)]
#[diesel(treat_none_as_default_value = false)] // see db::models: prepared once
pub struct NewKeyLimits {
    api_key_id: ApiKeyId,
    rate_limit_calls: Option<i64>,
    rate_limit_window_ms: Option<i64>,
    rate_limit_unit: &'static str,
    credits_remaining: Option<i64>,
    credits_refill_amount: Option<i64>,
    credits_refill_interval_ms: Option<i64>,
    credits_refilled_at: Option<Timestamp>,
    credits_low_threshold: Option<i64>,
}

impl KeyLimitChanges {
    /// A new key's limits.
    pub fn new_key(
        rate_limit: Option<KeyRateLimit>,
        credits: Option<CreditsSetting>,
        now: DateTime<Utc>,
    ) -> Self {
        let mut changes = Self::default();
        if rate_limit.is_some() {
            changes.set_rate_limit(rate_limit);
        }
        if let Some(credits) = credits {
            changes.set_credits(Some(credits), now);
        }
        changes
    }

    /// What `update` changes, on a row whose credits are `credits` (read
    /// under the row's lock when the change depends on them,
    /// [`crate::domain::CreditsChange::depends_on_balance`]; `None`:
    /// unlimited) ([`crate::domain::CreditsChange::edit`]).
    pub fn of_update(
        update: LimitsUpdate,
        credits: Option<CreditsState>,
        now: DateTime<Utc>,
    ) -> Result<Self, Precondition> {
        let mut changes = Self::default();
        if let Some(rate_limit) = update.rate_limit {
            changes.set_rate_limit(rate_limit);
        }
        match update.credits.edit(credits.is_some()) {
            CreditsEdit::Keep => {}
            CreditsEdit::Replace(credits) => changes.set_credits(credits, now),
            CreditsEdit::Balance(remaining) => changes.set_balance(remaining),
            CreditsEdit::Refill(refill) => changes.set_refill(refill, now),
            CreditsEdit::LowThreshold(threshold) => changes.set_low_threshold(threshold),
            CreditsEdit::Add(amount) => {
                if let Some(credits) = credits {
                    let (sum, refilled_at) = credits.plus(amount, now)?;
                    changes.set_balance(sum);
                    if let Some(at) = refilled_at {
                        changes.credits_refilled_at = Some(Some(Timestamp(at)));
                    }
                }
            }
        }
        Ok(changes)
    }

    pub fn is_empty(&self) -> bool {
        self.rate_limit_calls.is_none()
            && self.credits_remaining.is_none()
            && self.credits_refill_amount.is_none()
            && self.credits_low_threshold.is_none()
    }

    /// The same limits for another key (a rotation's replacement): the rate
    /// limit, and the credits with their balance now and the refill on the
    /// same schedule.
    pub fn copy_of(limits: &KeyLimits, now: DateTime<Utc>) -> Self {
        let mut changes = Self::default();
        changes.set_rate_limit(limits.rate_limit());
        if let Some(credits) = limits.credits() {
            let (remaining, _) = credits.as_of(now);
            changes.set_balance(remaining);
            changes.set_low_threshold(limits.low_threshold());
            if let Some((refill, last)) = credits.refill {
                changes.set_refill(Some(refill), refill.latest_boundary(last, now));
            }
        }
        changes
    }

    /// Sets (or with `None` clears) the key's own rate limit.
    pub fn set_rate_limit(&mut self, limit: Option<KeyRateLimit>) {
        self.rate_limit_calls = Some(limit.map(|limit| i64::from(limit.calls())));
        self.rate_limit_window_ms = Some(limit.map(|limit| limit.window_ms()));
        let unit = limit.map_or(RateUnit::Calls, |limit| limit.unit());
        self.rate_limit_unit = Some(unit.as_str());
    }

    /// Sets the balance and the refill; `None` makes the key unlimited.
    pub fn set_credits(&mut self, credits: Option<CreditsSetting>, now: DateTime<Utc>) {
        self.set_balance_or_unlimited(credits.map(|credits| credits.remaining));
        self.set_refill(credits.and_then(|credits| credits.refill), now);
        self.set_low_threshold(credits.and_then(|credits| credits.low_threshold));
    }

    /// Sets the balance only (a top-up).
    pub fn set_balance(&mut self, remaining: i64) {
        self.set_balance_or_unlimited(Some(remaining));
    }

    /// An owner's new balance re-arms the credit notices: a balance still
    /// low (or exhausted) after it is told again.
    fn set_balance_or_unlimited(&mut self, remaining: Option<i64>) {
        self.credits_remaining = Some(remaining);
        self.credits_low_noticed = Some(false);
        self.credits_exhausted_noticed = Some(false);
    }

    /// Sets (or with `None` removes) the low threshold, re-arming its
    /// notice.
    pub fn set_low_threshold(&mut self, threshold: Option<i64>) {
        self.credits_low_threshold = Some(threshold);
        self.credits_low_noticed = Some(false);
    }

    /// Sets (or ends) the refill; the first comes one interval after `now`.
    pub fn set_refill(&mut self, refill: Option<Refill>, now: DateTime<Utc>) {
        self.credits_refill_amount = Some(refill.map(|refill| refill.amount()));
        self.credits_refill_interval_ms = Some(refill.map(|refill| refill.interval_ms()));
        self.credits_refilled_at = Some(refill.map(|_| Timestamp(now)));
    }

    fn as_new(&self, api_key_id: ApiKeyId) -> NewKeyLimits {
        NewKeyLimits {
            api_key_id,
            rate_limit_calls: self.rate_limit_calls.flatten(),
            rate_limit_window_ms: self.rate_limit_window_ms.flatten(),
            rate_limit_unit: self.rate_limit_unit.unwrap_or(RateUnit::Calls.as_str()),
            credits_remaining: self.credits_remaining.flatten(),
            credits_refill_amount: self.credits_refill_amount.flatten(),
            credits_refill_interval_ms: self.credits_refill_interval_ms.flatten(),
            credits_refilled_at: self.credits_refilled_at.flatten(),
            credits_low_threshold: self.credits_low_threshold.flatten(),
        }
    }
}
