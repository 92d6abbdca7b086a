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
    /// Records `record`'s audit row (`audit`, its insert) and, for a
    /// change in an organization, the organization's next event, in the
    /// caller's transaction. On PostgreSQL that is one statement; no event
    /// for a change outside any organization (a user's own account) or in
    /// one this transaction deleted.
    pub async fn record_with_audit<A>(
        conn: &mut DbConnection,
        record: &AuditRecord,
        audit: A,
    ) -> diesel::QueryResult<()>
    where
        A: diesel::query_builder::QueryFragment<diesel::pg::Pg>
            + diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite>
            + diesel::query_builder::QueryId
            + Send,
    {
        use diesel_async::RunQueryDsl;
        let Some(event) = RecordEvent::of(record)? else {
            return crate::db::db_run!(conn => audit.execute(conn).await).map(drop);
        };
        let organization = OrganizationId(event.organization);
        let conn = match conn {
            DbConnection::Postgres(conn) => {
                let both = AuditedEvent::<A, NoChange> {
                    audit,
                    event,
                    change: None,
                };
                return both.execute(&mut **conn).await.map(drop);
            }
            DbConnection::Sqlite(conn) => conn,
        };
        let conn: &mut crate::db::SqliteAsyncConnection = conn;
        audit.execute(&mut *conn).await?;
        let Some(sequence) = next_sequence_on_sqlite(conn, organization).await? else {
            return Ok(());
        };
        let row = (
            organization_events::organization_id.eq(organization),
            organization_events::sequence.eq(sequence),
            organization_events::id.eq(EventId(event.id)),
            organization_events::event_type.eq(event.event_type),
            organization_events::resource_type.eq(event.resource_type),
            organization_events::resource_id.eq(&event.resource_id),
            organization_events::changes.eq(&event.changes),
            organization_events::created_at.eq(Timestamp(event.created_at)),
            organization_events::resource_state.eq(event.resource_state.as_deref()),
        );
        diesel::insert_into(organization_events::table)
            .values(row)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// `change` (an insert), `audit` (its audit row, recording `record`)
    /// and the organization's event of it, as one PostgreSQL statement:
    /// outside a transaction it commits on its own, all or nothing, and the
    /// counter's lock is held only while PostgreSQL commits. Returns the
    /// rows `change` inserted; `record` must be of an organization.
    pub async fn record_with_change<A, C>(
        conn: &mut diesel_async::AsyncPgConnection,
        record: &AuditRecord,
        audit: A,
        change: C,
    ) -> diesel::QueryResult<usize>
    where
        A: diesel::query_builder::QueryFragment<diesel::pg::Pg>
            + diesel::query_builder::QueryId
            + Send,
        C: diesel::query_builder::QueryFragment<diesel::pg::Pg>
            + diesel::query_builder::QueryId
            + Send,
    {
        use diesel_async::RunQueryDsl;
        let event = RecordEvent::of(record)?.ok_or(diesel::result::Error::NotFound)?;
        let all = AuditedEvent {
            audit,
            event,
            change: Some(change),
        };
        all.execute(conn).await
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

/// One event of [`OrganizationEvent::record_with_audit`] on PostgreSQL:
/// the organization's counter is incremented (created at 1; its row stays
/// locked until the transaction ends) and the event inserted with that
/// number, or nothing if the organization is gone (deleted by this very
/// transaction).
#[derive(diesel::query_builder::QueryId)]
struct RecordEvent {
    organization: uuid::Uuid,
    id: uuid::Uuid,
    event_type: &'static str,
    resource_type: &'static str,
    resource_id: String,
    changes: String,
    created_at: DateTime<Utc>,
    resource_state: Option<Vec<u8>>,
}

impl RecordEvent {
    /// The event of `record`; `None` for a change outside any organization.
    fn of(record: &AuditRecord) -> diesel::QueryResult<Option<Self>> {
        let Some(organization) = record.target.organization else {
            return Ok(None);
        };
        // The changes as the audit log keeps them: no secret is ever in one.
        let changes = serde_json::to_string(&record.changes)
            .map_err(|error| diesel::result::Error::SerializationError(Box::new(error)))?;
        Ok(Some(Self {
            organization: organization.0,
            id: EventId::generate().0,
            event_type: record.action.name(),
            resource_type: record.target.kind.name(),
            resource_id: record.target.id.clone(),
            changes,
            created_at: Utc::now(),
            resource_state: record.state.as_ref().map(|state| state.0.clone()),
        }))
    }
}

/// A change's audit row and its organization's event in one statement, so
/// one round trip: prepared once per connection (a static query id, as
/// the audit insert's is), and the counter's lock, which orders an
/// organization's changes, is held for the commit's round trip only. With
/// `change` (an insert), that too, after the WITH.
#[derive(diesel::query_builder::QueryId)]
struct AuditedEvent<A, C> {
    audit: A,
    event: RecordEvent,
    change: Option<C>,
}

/// No change: [`AuditedEvent`]'s event insert is its main statement.
#[derive(diesel::query_builder::QueryId)]
struct NoChange;

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for NoChange {
    fn walk_ast<'b>(
        &'b self,
        _: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        Ok(())
    }
}

impl<A, C> diesel::query_builder::QueryFragment<diesel::pg::Pg> for AuditedEvent<A, C>
where
    A: diesel::query_builder::QueryFragment<diesel::pg::Pg>,
    C: diesel::query_builder::QueryFragment<diesel::pg::Pg>,
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        use diesel::sql_types::{Binary, Nullable, Text};

        use crate::db::sql_types::{DbTimestamp, DbUuid};
        let event = &self.event;
        // A data-modifying WITH runs once whether or not it is read.
        out.push_sql("WITH audit AS (");
        self.audit.walk_ast(out.reborrow())?;
        out.push_sql(
            "), next AS ( \
                 INSERT INTO organization_event_counters (organization_id, last_sequence) \
                 SELECT id, 1 FROM organizations WHERE id = ",
        );
        out.push_bind_param::<DbUuid, _>(&event.organization)?;
        // The organization's row is locked before its counter, as a
        // delete locks them (the row, then the counter by its cascade):
        // left to the foreign keys' checks at the statement's end, the
        // lock came after the counter's and a racing delete deadlocked.
        out.push_sql(
            " FOR KEY SHARE ON CONFLICT (organization_id) DO UPDATE \
                 SET last_sequence = organization_event_counters.last_sequence + 1 \
                 RETURNING organization_id, last_sequence) ",
        );
        if self.change.is_some() {
            out.push_sql(", event AS (");
        }
        out.push_sql(
            "INSERT INTO organization_events (organization_id, sequence, id, event_type, \
                 resource_type, resource_id, changes, created_at, resource_state) \
             SELECT organization_id, last_sequence, ",
        );
        out.push_bind_param::<DbUuid, _>(&event.id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(event.event_type)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(event.resource_type)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&event.resource_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&event.changes)?;
        out.push_sql(", ");
        out.push_bind_param::<DbTimestamp, _>(&event.created_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Binary>, _>(&event.resource_state)?;
        out.push_sql(" FROM next");
        if let Some(change) = &self.change {
            out.push_sql(") ");
            change.walk_ast(out.reborrow())?;
        }
        Ok(())
    }
}

/// The organization's next event number on SQLite (whose one writer at a
/// time already orders the changes), or `None` if the organization is gone
/// (deleted by this very transaction).
async fn next_sequence_on_sqlite(
    conn: &mut crate::db::SqliteAsyncConnection,
    organization: OrganizationId,
) -> diesel::QueryResult<Option<i64>> {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Next {
        #[diesel(sql_type = BigInt)]
        last_sequence: i64,
    }
    // "WHERE true" keeps SQLite from reading ON CONFLICT as the SELECT's
    // join constraint.
    let next: Option<Next> = diesel::sql_query(
        "INSERT INTO organization_event_counters (organization_id, last_sequence) \
         SELECT id, 1 FROM organizations WHERE id = ? AND true \
         ON CONFLICT (organization_id) DO UPDATE \
         SET last_sequence = organization_event_counters.last_sequence + 1 \
         RETURNING last_sequence",
    )
    .bind::<crate::db::sql_types::DbUuid, _>(organization.0)
    .get_result(conn)
    .await
    .optional()?;
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
