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

use crate::db::schema::{
    organization_event_counters, organization_event_publications, organization_events, webhooks,
};
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
    /// The resource as the change left it (see [`crate::domain::ResourceState`]).
    pub resource_state: Option<Vec<u8>>,
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
            organization_events::resource_state.eq(record.state.as_ref().map(|state| &state.0)),
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

    /// Deletes up to `limit` events made before `before`; with
    /// `keep_unpublished`, only those already published; never one an
    /// active webhook has yet to receive.
    pub async fn purge(
        conn: &mut DbConnection,
        before: DateTime<Utc>,
        keep_unpublished: bool,
        limit: i64,
    ) -> diesel::QueryResult<usize> {
        use diesel::{BoolExpressionMethods, IntoSql, NullableExpressionMethods};
        use diesel_async::RunQueryDsl;
        let published = organization_event_publications::table
            .filter(
                organization_event_publications::organization_id
                    .eq(organization_events::organization_id),
            )
            .select(organization_event_publications::published_sequence)
            .single_value();
        let oldest = organization_events::table
            .filter(organization_events::created_at.lt(Timestamp(before)))
            .filter(
                (!keep_unpublished)
                    .into_sql::<diesel::sql_types::Bool>()
                    .or(organization_events::sequence.nullable().le(published)),
            )
            // Nor one an active webhook has yet to receive.
            .filter(diesel::dsl::not(diesel::dsl::exists(
                webhooks::table
                    .filter(webhooks::organization_id.eq(organization_events::organization_id))
                    .filter(webhooks::state.eq(crate::db::models::webhook::ACTIVE))
                    .filter(webhooks::delivered_sequence.lt(organization_events::sequence)),
            )))
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

/// The `organization_event_publications` table: how far each
/// organization's events are published to NATS JetStream.
pub struct EventPublication;

impl EventPublication {
    /// Organizations (up to `limit`) with events not yet published, and
    /// the number of each one's newest event.
    pub async fn pending(
        conn: &mut DbConnection,
        limit: i64,
    ) -> diesel::QueryResult<Vec<(OrganizationId, i64)>> {
        use diesel::{BoolExpressionMethods, JoinOnDsl, NullableExpressionMethods};
        let published = organization_event_publications::published_sequence.nullable();
        all_rows!(
            conn,
            organization_event_counters::table
                .left_join(
                    organization_event_publications::table
                        .on(organization_event_publications::organization_id
                            .eq(organization_event_counters::organization_id))
                )
                .filter(
                    published
                        .is_null()
                        .or(published.lt(organization_event_counters::last_sequence.nullable()))
                )
                .select((
                    organization_event_counters::organization_id,
                    organization_event_counters::last_sequence,
                ))
                .limit(limit)
        )
    }

    /// The organization's row, created at 0 if it has none (nothing if
    /// the organization is gone).
    pub async fn start(
        conn: &mut DbConnection,
        organization: OrganizationId,
    ) -> diesel::QueryResult<()> {
        use diesel_async::RunQueryDsl;
        // "AND true" keeps SQLite from reading ON CONFLICT as the SELECT's
        // join constraint; PostgreSQL does not mind it.
        let sql = |placeholder: &str| {
            format!(
                "INSERT INTO organization_event_publications \
                 (organization_id, published_sequence) \
                 SELECT id, 0 FROM organizations WHERE id = {placeholder} AND true \
                 ON CONFLICT (organization_id) DO NOTHING"
            )
        };
        let id = organization.0;
        match conn {
            DbConnection::Postgres(conn) => {
                diesel::sql_query(sql("$1"))
                    .bind::<crate::db::sql_types::DbUuid, _>(id)
                    .execute(&mut **conn)
                    .await?
            }
            DbConnection::Sqlite(conn) => {
                let conn: &mut crate::db::SqliteAsyncConnection = conn;
                diesel::sql_query(sql("?"))
                    .bind::<crate::db::sql_types::DbUuid, _>(id)
                    .execute(conn)
                    .await?
            }
        };
        Ok(())
    }

    /// The number of the organization's last published event, its row
    /// locked until the transaction ends; `None` while another replica
    /// holds it (PostgreSQL; SQLite's one process has no one to wait for).
    pub async fn claim(
        conn: &mut DbConnection,
        organization: OrganizationId,
    ) -> diesel::QueryResult<Option<i64>> {
        use diesel_async::RunQueryDsl;
        let row = organization_event_publications::table
            .find(organization)
            .select(organization_event_publications::published_sequence);
        match conn {
            DbConnection::Postgres(conn) => row
                .for_update()
                .skip_locked()
                .first(&mut **conn)
                .await
                .optional(),
            DbConnection::Sqlite(conn) => {
                let conn: &mut crate::db::SqliteAsyncConnection = conn;
                row.first(conn).await.optional()
            }
        }
    }

    /// Records that the organization's events up to number `published`
    /// are published.
    pub async fn advance(
        conn: &mut DbConnection,
        organization: OrganizationId,
        published: i64,
    ) -> diesel::QueryResult<()> {
        let row = organization_event_publications::table.find(organization);
        let set = organization_event_publications::published_sequence.eq(published);
        update_rows!(conn, row, set)?;
        Ok(())
    }
}
