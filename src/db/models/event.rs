//! The `organization_events` table: the outbox of every change the audit
//! log records in an organization, written by [`crate::db::write`] in the
//! change's own transaction. An event's number is taken by incrementing
//! its organization's counter (`organization_event_counters`), which locks
//! the counter's row until the transaction ends: two changes in one
//! organization commit in the order of their numbers, so a reader that has
//! seen every event up to N and reads on from there misses none, on any
//! replica.

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, Queryable, Selectable};

use crate::db::schema::{organization_event_counters, organization_events};
use crate::db::sql_types::Timestamp;
use crate::db::{db_run, DbConnection};
use crate::domain::{AuditRecord, EventId, OrganizationId};

/// A row of `organization_events`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = organization_events, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct OrganizationEvent {
    pub organization_id: OrganizationId,
    pub sequence: i64,
    pub id: EventId,
    pub event_type: String,
    pub resource_type: String,
    pub resource_id: String,
    /// JSON: the audit record's changes.
    pub changes: String,
    pub created_at: DateTime<Utc>,
}

impl OrganizationEvent {
    /// Records `record` as the next event of its organization, in the
    /// caller's transaction; nothing for a change outside any organization
    /// (a user's own account) or in one this transaction deleted.
    pub async fn record(conn: &mut DbConnection, record: &AuditRecord) -> diesel::QueryResult<()> {
        use diesel_async::RunQueryDsl;
        let Some(organization) = record.target.organization else {
            return Ok(());
        };
        let Some(sequence) = next_sequence(conn, organization).await? else {
            return Ok(());
        };
        // The changes as the audit log keeps them: no secret is ever in one.
        let changes = serde_json::to_string(&record.changes)
            .map_err(|error| diesel::result::Error::SerializationError(Box::new(error)))?;
        let row = (
            organization_events::organization_id.eq(organization),
            organization_events::sequence.eq(sequence),
            organization_events::id.eq(EventId::generate()),
            organization_events::event_type.eq(record.action.name()),
            organization_events::resource_type.eq(record.target.kind.name()),
            organization_events::resource_id.eq(&record.target.id),
            organization_events::changes.eq(changes),
            organization_events::created_at.eq(Timestamp::now()),
        );
        db_run!(conn => {
            diesel::insert_into(organization_events::table)
                .values(row)
                .execute(conn)
                .await
        })?;
        Ok(())
    }

    /// Up to `limit` of the organization's events after number `after`, in
    /// order.
    pub async fn after(
        conn: &mut DbConnection,
        organization: OrganizationId,
        after: i64,
        limit: i64,
    ) -> diesel::QueryResult<Vec<OrganizationEvent>> {
        use diesel::SelectableHelper;
        all_rows!(
            conn,
            organization_events::table
                .filter(organization_events::organization_id.eq(organization))
                .filter(organization_events::sequence.gt(after))
                .order(organization_events::sequence)
                .limit(limit)
                .select(OrganizationEvent::as_select())
        )
    }

    /// The number of the organization's newest event (0: none).
    pub async fn latest(
        conn: &mut DbConnection,
        organization: OrganizationId,
    ) -> diesel::QueryResult<i64> {
        let latest: Option<i64> = first_row!(
            conn,
            organization_event_counters::table
                .find(organization)
                .select(organization_event_counters::last_sequence)
        )?;
        Ok(latest.unwrap_or(0))
    }

    /// Deletes up to `limit` events made before `before`.
    pub async fn purge(
        conn: &mut DbConnection,
        before: DateTime<Utc>,
        limit: i64,
    ) -> diesel::QueryResult<usize> {
        use diesel_async::RunQueryDsl;
        let oldest = organization_events::table
            .filter(organization_events::created_at.lt(Timestamp(before)))
            .select(organization_events::id)
            .limit(limit);
        db_run!(conn => {
            let ids: Vec<EventId> = oldest.load(conn).await?;
            diesel::delete(organization_events::table.filter(organization_events::id.eq_any(ids)))
                .execute(conn)
                .await
        })
    }
}

/// The organization's next event number, its counter row locked until the
/// transaction ends (one statement: created at 1, else incremented); `None`
/// if the organization is gone (deleted by this very transaction).
async fn next_sequence(
    conn: &mut DbConnection,
    organization: OrganizationId,
) -> diesel::QueryResult<Option<i64>> {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Next {
        #[diesel(sql_type = BigInt)]
        last_sequence: i64,
    }
    let id = organization.0;
    let next: Option<Next> = match conn {
        DbConnection::Postgres(conn) => diesel::sql_query(
            "INSERT INTO organization_event_counters (organization_id, last_sequence) \
                 SELECT id, 1 FROM organizations WHERE id = $1 \
                 ON CONFLICT (organization_id) DO UPDATE \
                 SET last_sequence = organization_event_counters.last_sequence + 1 \
                 RETURNING last_sequence",
        )
        .bind::<crate::db::sql_types::DbUuid, _>(id)
        .get_result(&mut **conn)
        .await
        .optional()?,
        DbConnection::Sqlite(conn) => {
            let conn: &mut crate::db::SqliteAsyncConnection = conn;
            // "WHERE true" keeps SQLite from reading ON CONFLICT as the
            // SELECT's join constraint.
            diesel::sql_query(
                "INSERT INTO organization_event_counters (organization_id, last_sequence) \
                 SELECT id, 1 FROM organizations WHERE id = ? AND true \
                 ON CONFLICT (organization_id) DO UPDATE \
                 SET last_sequence = organization_event_counters.last_sequence + 1 \
                 RETURNING last_sequence",
            )
            .bind::<crate::db::sql_types::DbUuid, _>(id)
            .get_result(conn)
            .await
            .optional()?
        }
    };
    Ok(next.map(|next| next.last_sequence))
}
