//! The notice columns of `api_keys`, `api_key_limits` and
//! `organization_limits`: which key expiries and which falls of a balance
//! have had their lifecycle event. The sweep that reads them
//! ([`crate::services::lifecycle_events`]) flips a column and records the
//! event in one transaction, under the row's lock, so no two replicas send
//! the same notice. The spend path never writes these columns.

use chrono::{DateTime, Utc};
use diesel::{BoolExpressionMethods, ExpressionMethods, NullableExpressionMethods, QueryDsl};

use crate::db::schema::{api_key_limits, api_keys, organization_limits};
use crate::db::sql_types::Timestamp;
use crate::db::DbConnection;
use crate::domain::{ApiKeyId, CreditNotices, CreditsState, OrganizationId, Refill};

/// Live keys (neither revoked nor replaced) whose expiry falls in
/// (`now`, `until`] and has had no `api_key.expiring` event, locked until
/// the transaction ends; on PostgreSQL a key another replica holds is
/// skipped (it is being noticed there). At most `limit`, by expiry.
pub async fn keys_expiring_unnoticed(
    conn: &mut DbConnection,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: i64,
) -> diesel::QueryResult<Vec<ApiKeyId>> {
    use diesel_async::RunQueryDsl;
    let due = api_keys::table
        .filter(api_keys::expires_at.gt(Timestamp(now)))
        .filter(api_keys::expires_at.le(Timestamp(until)))
        .filter(api_keys::revoked.eq(false))
        .filter(api_keys::rotated_at.is_null())
        .filter(
            api_keys::expiry_noticed_for
                .is_null()
                .or(api_keys::expiry_noticed_for.ne(api_keys::expires_at)),
        )
        .select(api_keys::id)
        .order(api_keys::expires_at)
        .limit(limit);
    // Only the lock differs: SQLite has no row locks, and its transaction
    // holds the one write lock from its BEGIN (`DbConnection::transaction`).
    match conn {
        DbConnection::Postgres(conn) => due.for_update().skip_locked().load(&mut **conn).await,
        DbConnection::Sqlite(conn) => due.load(&mut **conn).await,
    }
}

/// Records that the key's present expiry has had its event.
pub async fn mark_expiry_noticed(conn: &mut DbConnection, id: ApiKeyId) -> diesel::QueryResult<()> {
    update_rows!(
        conn,
        api_keys::table.find(id),
        api_keys::expiry_noticed_for.eq(api_keys::expires_at)
    )?;
    Ok(())
}

/// A balance and the notices recorded for it.
#[derive(Debug, Clone, Copy)]
pub struct CreditNoticeRow<Id> {
    pub id: Id,
    pub credits: CreditsState,
    pub low_threshold: Option<i64>,
    /// The notices already recorded.
    pub noticed: CreditNotices,
}

impl<Id> CreditNoticeRow<Id> {
    /// The notices the balance calls for as of `now` (a refill that is due
    /// counts as done).
    pub fn due(&self, now: DateTime<Utc>) -> CreditNotices {
        let (balance, _) = self.credits.as_of(now);
        CreditNotices::of(balance, self.low_threshold)
    }

    /// The refill that is due as of `now`, if one is: the balance it sets
    /// and its time, as the next spend would write them.
    pub fn due_refill(&self, now: DateTime<Utc>) -> Option<(i64, DateTime<Utc>)> {
        let (refill, last) = self.credits.refill?;
        let boundary = refill.latest_boundary(last, now);
        (boundary > last).then(|| (refill.amount(), boundary))
    }

    /// Whether the row needs writing as of `now`: its notices are out of
    /// step with its balance, or a refill is due (written now, so that the
    /// stored balance stops looking low to the next sweep).
    pub fn needs_writing(&self, now: DateTime<Utc>) -> bool {
        self.due(now) != self.noticed || self.due_refill(now).is_some()
    }
}

/// The columns a notice is judged on, as selected.
type NoticeColumns<Id> = (
    Id,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<DateTime<Utc>>,
    Option<i64>,
    bool,
    bool,
);

fn notice_row<Id>(
    (id, remaining, amount, interval_ms, refilled_at, low_threshold, low, exhausted): NoticeColumns<
        Id,
    >,
) -> Option<CreditNoticeRow<Id>> {
    let refill = match (amount, interval_ms, refilled_at) {
        (Some(amount), Some(interval_ms), Some(at)) => {
            Refill::from_stored(amount, interval_ms).map(|refill| (refill, at))
        }
        _ => None,
    };
    Some(CreditNoticeRow {
        id,
        credits: CreditsState {
            remaining: remaining?,
            refill,
        },
        low_threshold,
        noticed: CreditNotices { low, exhausted },
    })
}

/// [`NoticeColumns`] of a limits table.
macro_rules! notice_columns {
    ($t:ident, $id_column:ident) => {
        (
            $t::$id_column,
            $t::credits_remaining,
            $t::credits_refill_amount,
            $t::credits_refill_interval_ms,
            $t::credits_refilled_at,
            $t::credits_low_threshold,
            $t::credits_low_noticed,
            $t::credits_exhausted_noticed,
        )
    };
}

/// The credit notice queries of a limits table (keys' and organizations'
/// name their columns alike).
macro_rules! credit_notice_queries {
    ($table:ident, $id_column:ident, $id:ty, $candidates:ident, $lock:ident, $set:ident) => {
        /// Rows after `after` (by id, at most `limit`) whose notices may be
        /// out of step with their balance: those whose stored balance says
        /// so, and those noticed that have a refill, which may have fallen
        /// due (the caller judges the balance as of now).
        pub async fn $candidates(
            conn: &mut DbConnection,
            after: Option<$id>,
            limit: i64,
        ) -> diesel::QueryResult<Vec<CreditNoticeRow<$id>>> {
            use $table as t;
            let remaining = t::credits_remaining;
            let threshold = t::credits_low_threshold;
            let out_of_step = t::credits_refill_amount
                .is_not_null()
                .and(t::credits_low_noticed.or(t::credits_exhausted_noticed))
                .or(t::credits_low_noticed.eq(false).and(
                    threshold
                        .is_not_null()
                        .and(remaining.assume_not_null().le(threshold.assume_not_null())),
                ))
                .or(t::credits_low_noticed.eq(true).and(
                    threshold
                        .is_null()
                        .or(remaining.assume_not_null().gt(threshold.assume_not_null())),
                ))
                .or(t::credits_exhausted_noticed
                    .eq(false)
                    .and(remaining.assume_not_null().le(0)))
                .or(t::credits_exhausted_noticed
                    .eq(true)
                    .and(remaining.assume_not_null().gt(0)));
            let rows: Vec<NoticeColumns<$id>> = all_rows!(conn, {
                let mut rows = t::table
                    .filter(remaining.is_not_null())
                    .filter(out_of_step)
                    .order(t::$id_column)
                    .limit(limit)
                    .select(notice_columns!(t, $id_column))
                    .into_boxed();
                if let Some(after) = after {
                    rows = rows.filter(t::$id_column.gt(after));
                }
                rows
            })?;
            Ok(rows.into_iter().filter_map(notice_row).collect())
        }

        /// The row, locked until the transaction ends (on SQLite, the
        /// whole database).
        pub async fn $lock(
            conn: &mut DbConnection,
            id: $id,
        ) -> diesel::QueryResult<Option<CreditNoticeRow<$id>>> {
            use diesel::OptionalExtension;
            use diesel_async::RunQueryDsl;
            use $table as t;
            let row = t::table.find(id).select(notice_columns!(t, $id_column));
            let row: Option<NoticeColumns<$id>> = match conn {
                DbConnection::Postgres(conn) => {
                    row.for_update().first(&mut **conn).await.optional()?
                }
                DbConnection::Sqlite(conn) => row.first(&mut **conn).await.optional()?,
            };
            Ok(row.and_then(notice_row))
        }

        /// Records the notices in force for the locked row's balance as
        /// of `now`, and applies a refill that is due, as a spend would.
        pub async fn $set(
            conn: &mut DbConnection,
            row: &CreditNoticeRow<$id>,
            now: DateTime<Utc>,
        ) -> diesel::QueryResult<()> {
            use $table as t;
            let notices = row.due(now);
            let refill = row.due_refill(now);
            update_rows!(
                conn,
                t::table.find(row.id),
                (
                    t::credits_low_noticed.eq(notices.low),
                    t::credits_exhausted_noticed.eq(notices.exhausted),
                    refill.map(|(amount, _)| t::credits_remaining.eq(amount)),
                    refill.map(|(_, at)| t::credits_refilled_at.eq(Timestamp(at))),
                )
            )?;
            Ok(())
        }
    };
}

credit_notice_queries!(
    api_key_limits,
    api_key_id,
    ApiKeyId,
    key_credit_candidates,
    lock_key_credits,
    set_key_credit_notices
);
credit_notice_queries!(
    organization_limits,
    organization_id,
    OrganizationId,
    organization_credit_candidates,
    lock_organization_credits,
    set_organization_credit_notices
);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeDelta;

    use super::*;

    fn row(remaining: i64, noticed_low: bool, refilled: TimeDelta) -> CreditNoticeRow<i64> {
        let refill = Refill::parse("refill", 100, Duration::from_secs(60)).unwrap();
        CreditNoticeRow {
            id: 1,
            credits: CreditsState {
                remaining,
                refill: Some((refill, Utc::now() - refilled)),
            },
            low_threshold: Some(10),
            noticed: CreditNotices {
                low: noticed_low,
                exhausted: false,
            },
        }
    }

    #[test]
    fn a_noticed_balance_whose_refill_fell_due_is_written_with_the_refill_and_the_notice_cleared() {
        let now = Utc::now();
        let refilled = row(5, true, TimeDelta::seconds(90));
        assert_eq!(refilled.due(now), CreditNotices::default());
        assert_eq!(
            refilled.due_refill(now).map(|(amount, _)| amount),
            Some(100)
        );
        assert!(refilled.needs_writing(now));
    }

    #[test]
    fn a_low_balance_already_noticed_before_its_refill_is_left_alone() {
        let now = Utc::now();
        let waiting = row(5, true, TimeDelta::seconds(30));
        assert!(waiting.due(now).low);
        assert_eq!(waiting.due_refill(now), None);
        assert!(!waiting.needs_writing(now));
        // Not yet noticed: written, to record the notice.
        assert!(row(5, false, TimeDelta::seconds(30)).needs_writing(now));
    }
}
