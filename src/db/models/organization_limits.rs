//! The `organization_limits` table: an organization's rate limit and
//! credits, shared by every key of every chatbot it owns. The columns and
//! their meaning are `api_key_limits`'s ([`super::key_limits`]); the
//! balance is only ever written under the row's lock
//! ([`OrganizationLimits::lock_many`]), in the transaction that also
//! writes the keys' balances, so together they never overrun.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, QueryDsl, Queryable, Selectable};

use super::key_limits::limits_from_columns;
use super::KeyLimitChanges;
use crate::db::schema::organization_limits;
use crate::db::sql_types::Timestamp;
use crate::db::DbConnection;
use crate::domain::{OrganizationId, RateUnit};

/// A row of `organization_limits`.
#[derive(Debug, Clone, Copy, Queryable, Selectable)]
#[diesel(table_name = organization_limits, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct OrganizationLimits {
    pub organization_id: OrganizationId,
    rate_limit_calls: Option<i64>,
    rate_limit_window_ms: Option<i64>,
    credits_remaining: Option<i64>,
    credits_refill_amount: Option<i64>,
    credits_refill_interval_ms: Option<i64>,
    credits_refilled_at: Option<DateTime<Utc>>,
    #[diesel(select_expression = organization_limits::rate_limit_unit.eq(RateUnit::Credits.as_str()))]
    #[diesel(select_expression_type = diesel::dsl::Eq<organization_limits::rate_limit_unit, &'static str>)]
    rate_limit_in_credits: bool,
    credits_low_threshold: Option<i64>,
}

/// An organization's balance to write (under its lock): the new balance
/// and the new refill time if a refill happened.
#[derive(Debug, Clone, Copy)]
pub struct OrganizationBalance {
    pub id: OrganizationId,
    pub remaining: i64,
    pub refilled_at: Option<DateTime<Utc>>,
}

limits_from_columns!(OrganizationLimits);

impl OrganizationLimits {
    pub async fn find(
        conn: &mut DbConnection,
        id: OrganizationId,
    ) -> diesel::QueryResult<Option<OrganizationLimits>> {
        use diesel::SelectableHelper;
        first_row!(
            conn,
            organization_limits::table
                .find(id)
                .select(OrganizationLimits::as_select())
        )
    }

    /// The limits of those of `ids` that have any, by organization.
    pub async fn find_many(
        conn: &mut DbConnection,
        ids: &[OrganizationId],
    ) -> diesel::QueryResult<HashMap<OrganizationId, OrganizationLimits>> {
        use diesel::SelectableHelper;
        let rows: Vec<OrganizationLimits> = all_rows!(
            conn,
            organization_limits::table
                .filter(organization_limits::organization_id.eq_any(ids))
                .select(OrganizationLimits::as_select())
        )?;
        Ok(rows
            .into_iter()
            .map(|row| (row.organization_id, row))
            .collect())
    }

    /// Applies `changes` to the organization's row, creating it if it had
    /// no limits. The caller holds the organization's lock.
    pub async fn apply(
        conn: &mut DbConnection,
        id: OrganizationId,
        changes: &KeyLimitChanges,
    ) -> diesel::QueryResult<()> {
        if changes.is_empty() {
            return Ok(());
        }
        crate::db::db_run!(conn => {
            diesel_async::RunQueryDsl::execute(
                diesel::insert_into(organization_limits::table)
                    .values(organization_limits::organization_id.eq(id))
                    .on_conflict_do_nothing(),
                conn,
            )
            .await
        })?;
        let set = (
            changes
                .rate_limit_calls
                .map(|v| organization_limits::rate_limit_calls.eq(v)),
            changes
                .rate_limit_window_ms
                .map(|v| organization_limits::rate_limit_window_ms.eq(v)),
            changes
                .rate_limit_unit
                .map(|v| organization_limits::rate_limit_unit.eq(v)),
            changes
                .credits_remaining
                .map(|v| organization_limits::credits_remaining.eq(v)),
            changes
                .credits_refill_amount
                .map(|v| organization_limits::credits_refill_amount.eq(v)),
            changes
                .credits_refill_interval_ms
                .map(|v| organization_limits::credits_refill_interval_ms.eq(v)),
            changes
                .credits_refilled_at
                .map(|v| organization_limits::credits_refilled_at.eq(v)),
            changes
                .credits_low_threshold
                .map(|v| organization_limits::credits_low_threshold.eq(v)),
            changes
                .credits_low_noticed
                .map(|v| organization_limits::credits_low_noticed.eq(v)),
            changes
                .credits_exhausted_noticed
                .map(|v| organization_limits::credits_exhausted_noticed.eq(v)),
        );
        update_rows!(conn, organization_limits::table.find(id), set)?;
        Ok(())
    }

    /// The rows of `ids` that exist, locked until the transaction ends, in
    /// id order (the same on every replica: no deadlock). Taken after the
    /// keys' rows ([`super::KeyLimits::lock_many`]), always.
    pub async fn lock_many(
        conn: &mut DbConnection,
        ids: &[OrganizationId],
    ) -> diesel::QueryResult<Vec<OrganizationLimits>> {
        use diesel::SelectableHelper;
        use diesel_async::RunQueryDsl;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = organization_limits::table
            .filter(organization_limits::organization_id.eq_any(ids))
            .order(organization_limits::organization_id);
        match conn {
            DbConnection::Postgres(conn) => {
                rows.select(OrganizationLimits::as_select())
                    .for_update()
                    .load(&mut **conn)
                    .await
            }
            // SQLite: the caller's transaction already holds the database's
            // write lock (the keys' rows were locked first).
            DbConnection::Sqlite(conn) => {
                let conn: &mut crate::db::SqliteAsyncConnection = conn;
                rows.select(OrganizationLimits::as_select())
                    .load(conn)
                    .await
            }
        }
    }

    /// Writes balances computed under [`lock_many`](Self::lock_many).
    pub async fn write_balances(
        conn: &mut DbConnection,
        balances: &[OrganizationBalance],
    ) -> diesel::QueryResult<()> {
        for balance in balances {
            let row = organization_limits::table.find(balance.id);
            let remaining = organization_limits::credits_remaining.eq(balance.remaining);
            match balance.refilled_at {
                Some(at) => {
                    let refilled_at = organization_limits::credits_refilled_at.eq(Timestamp(at));
                    update_rows!(conn, row, (remaining, refilled_at))?
                }
                None => update_rows!(conn, row, remaining)?,
            };
        }
        Ok(())
    }
}

/// An organization and its limits, as the API shows them.
#[derive(Debug, Clone)]
pub struct OrganizationWithLimits {
    pub organization: super::Organization,
    pub limits: Option<OrganizationLimits>,
}

impl OrganizationWithLimits {
    pub async fn load(
        conn: &mut DbConnection,
        organization: super::Organization,
    ) -> diesel::QueryResult<Self> {
        let limits = OrganizationLimits::find(conn, organization.id).await?;
        Ok(Self {
            organization,
            limits,
        })
    }

    /// Each organization with its limits, in one more query for all.
    pub async fn load_all(
        conn: &mut DbConnection,
        organizations: Vec<super::Organization>,
    ) -> diesel::QueryResult<Vec<Self>> {
        let ids: Vec<OrganizationId> = organizations.iter().map(|o| o.id).collect();
        let mut limits = OrganizationLimits::find_many(conn, &ids).await?;
        Ok(organizations
            .into_iter()
            .map(|organization| Self {
                limits: limits.remove(&organization.id),
                organization,
            })
            .collect())
    }
}
