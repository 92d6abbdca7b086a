//! The `webhooks` and `webhook_deliveries` tables: an organization's
//! endpoints, how far each got in its organization's events, and each
//! event's delivery with its attempts. A replica delivering a webhook's
//! events holds a lease on its row ([`Webhook::claim_due`]), not a lock: no
//! connection or transaction stays open while an endpoint answers.

use chrono::{DateTime, Utc};
use diesel::{
    ExpressionMethods, Insertable, OptionalExtension, QueryDsl, Queryable, Selectable,
    SelectableHelper,
};
use diesel_async::RunQueryDsl;

use crate::db::schema::{webhook_deliveries, webhooks};
use crate::db::sql_types::{DbTimestamp, DbUuid, Timestamp};
use crate::db::{db_run, DbConnection};
use crate::domain::{EventId, OrganizationId, ReplicaId, UserId, WebhookDeliveryId, WebhookId};

/// A webhook receives events while active.
pub const ACTIVE: &str = "active";
/// A disabled webhook receives none.
pub const DISABLED: &str = "disabled";

/// A row of `webhooks`, without its lease.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhooks, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Webhook {
    pub id: WebhookId,
    pub organization_id: OrganizationId,
    pub url: String,
    event_types: String,
    pub description: String,
    pub state: String,
    pub disabled_reason: String,
    pub secret_salt: Vec<u8>,
    pub delivered_sequence: i64,
    pub retry_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Webhook {
    /// The event types it receives; empty: every type.
    pub fn event_types(&self) -> Vec<String> {
        serde_json::from_str(&self.event_types).unwrap_or_default()
    }

    pub fn is_active(&self) -> bool {
        self.state == ACTIVE
    }

    /// Whether it receives events of `event_type`.
    pub fn receives(&self, event_type: &str) -> bool {
        let types = self.event_types();
        types.is_empty() || types.iter().any(|wanted| wanted == event_type)
    }
}

/// A webhook to insert.
#[derive(Insertable)]
#[diesel(table_name = webhooks)]
#[diesel(treat_none_as_default_value = false)] // see db::models: prepared once
pub struct NewWebhook<'a> {
    pub id: WebhookId,
    pub organization_id: OrganizationId,
    pub url: &'a str,
    pub event_types: String,
    pub description: &'a str,
    pub state: &'static str,
    pub disabled_reason: &'static str,
    pub secret_salt: &'a [u8],
    pub delivered_sequence: i64,
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What an UpdateWebhook sets (each `None`: unchanged).
#[derive(Debug, Clone, Default, diesel::AsChangeset)]
#[diesel(table_name = webhooks)]
pub struct WebhookChanges {
    pub url: Option<String>,
    pub event_types: Option<String>,
    pub description: Option<String>,
    pub state: Option<&'static str>,
    pub disabled_reason: Option<String>,
    /// Enabled again: the next event is due at once.
    pub retry_at: Option<Option<Timestamp>>,
}

impl WebhookChanges {
    /// The event types as stored.
    pub fn event_types_json(types: &[String]) -> String {
        serde_json::to_string(types).unwrap_or_else(|_| "[]".into())
    }
}

impl Webhook {
    pub async fn insert(
        conn: &mut DbConnection,
        new: &NewWebhook<'_>,
    ) -> diesel::QueryResult<Webhook> {
        db_run!(conn => {
            diesel::insert_into(webhooks::table)
                .values(new)
                .returning(Webhook::as_returning())
                .get_result(conn)
                .await
        })
    }

    pub async fn find(
        conn: &mut DbConnection,
        id: WebhookId,
    ) -> diesel::QueryResult<Option<Webhook>> {
        first_row!(conn, webhooks::table.find(id).select(Webhook::as_select()))
    }

    /// The organization's webhooks, oldest first.
    pub async fn of_organization(
        conn: &mut DbConnection,
        organization: OrganizationId,
        limit: i64,
    ) -> diesel::QueryResult<Vec<Webhook>> {
        all_rows!(
            conn,
            webhooks::table
                .filter(webhooks::organization_id.eq(organization))
                .order((webhooks::created_at, webhooks::id))
                .limit(limit)
                .select(Webhook::as_select())
        )
    }

    pub async fn count_of(
        conn: &mut DbConnection,
        organization: OrganizationId,
    ) -> diesel::QueryResult<i64> {
        db_run!(conn => {
            webhooks::table
                .filter(webhooks::organization_id.eq(organization))
                .count()
                .get_result(conn)
                .await
        })
    }

    /// Applies `changes`; the row as changed, `None` if there is none.
    pub async fn update(
        conn: &mut DbConnection,
        id: WebhookId,
        changes: &WebhookChanges,
    ) -> diesel::QueryResult<Option<Webhook>> {
        let now = webhooks::updated_at.eq(Timestamp::now());
        db_run!(conn => {
            let update = diesel::update(webhooks::table.find(id))
                .set((changes, now))
                .returning(Webhook::as_returning());
            crate::db::PreparedOnce(update).get_result(conn).await.optional()
        })
    }

    pub async fn delete(conn: &mut DbConnection, id: WebhookId) -> diesel::QueryResult<bool> {
        let deleted = db_run!(conn => {
            diesel::delete(webhooks::table.find(id)).execute(conn).await
        })?;
        Ok(deleted == 1)
    }

    /// Takes a lease until `until` for `owner` on up to `limit` webhooks
    /// with something due at `now`: an active one whose organization has
    /// events past its number (and no retry pending later), or one with a
    /// redelivery due. PostgreSQL skips rows another replica is taking at
    /// the same moment; SQLite has one writer.
    pub async fn claim_due(
        conn: &mut DbConnection,
        owner: ReplicaId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: i64,
    ) -> diesel::QueryResult<Vec<Webhook>> {
        #[derive(diesel::QueryableByName)]
        struct Claimed {
            #[diesel(sql_type = DbUuid)]
            id: WebhookId,
        }
        // The same statements on both stores, in SQLite's numbered
        // parameters (?1) or PostgreSQL's ($1): the webhooks due, and the
        // claim of them.
        let due = |parameter: &str, lock: &str| {
            format!(
                "SELECT w.id FROM webhooks w \
                 LEFT JOIN organization_event_counters c ON c.organization_id = w.organization_id \
                 WHERE (w.lease_until IS NULL OR w.lease_until < {p}3) AND ( \
                 (w.state = 'active' AND COALESCE(c.last_sequence, 0) > w.delivered_sequence \
                 AND (w.retry_at IS NULL OR w.retry_at <= {p}3)) \
                 OR EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.webhook_id = w.id \
                 AND d.redelivery AND d.state = 'pending' AND d.next_attempt_at <= {p}3)) \
                 ORDER BY w.id LIMIT {p}4 {lock}",
                p = parameter
            )
        };
        let sql = |parameter: &str, lock: &str| {
            format!(
                "UPDATE webhooks SET lease_until = {p}1, lease_owner = {p}2 WHERE id IN ( \
                 {due}) RETURNING id",
                p = parameter,
                due = due(parameter, lock)
            )
        };
        let claimed: Vec<Claimed> = match conn {
            DbConnection::Postgres(conn) => {
                // Its text is fixed, so prepared once (every replica polls).
                let claim = diesel::sql_query(sql("$", "FOR UPDATE OF w SKIP LOCKED"))
                    .bind::<DbTimestamp, _>(Timestamp(until))
                    .bind::<DbUuid, _>(owner)
                    .bind::<DbTimestamp, _>(Timestamp(now))
                    .bind::<diesel::sql_types::BigInt, _>(limit);
                crate::db::PreparedOnce(claim).load(&mut **conn).await?
            }
            DbConnection::Sqlite(conn) => {
                let conn: &mut crate::db::SqliteAsyncConnection = conn;
                // An UPDATE takes SQLite's one write lock even when it
                // matches nothing, so an idle poll would queue behind every
                // writer (and they behind it) several times a second: ask
                // first, without the lock, whether anything is due.
                #[derive(diesel::QueryableByName)]
                struct Due {
                    #[diesel(sql_type = diesel::sql_types::Bool)]
                    any: bool,
                }
                let Due { any } =
                    diesel::sql_query(format!("SELECT EXISTS ({}) AS any", due("?", "")))
                        .bind::<DbTimestamp, _>(Timestamp(until))
                        .bind::<DbUuid, _>(owner)
                        .bind::<DbTimestamp, _>(Timestamp(now))
                        .bind::<diesel::sql_types::BigInt, _>(limit)
                        .get_result(conn)
                        .await?;
                if !any {
                    return Ok(Vec::new());
                }
                diesel::sql_query(sql("?", ""))
                    .bind::<DbTimestamp, _>(Timestamp(until))
                    .bind::<DbUuid, _>(owner)
                    .bind::<DbTimestamp, _>(Timestamp(now))
                    .bind::<diesel::sql_types::BigInt, _>(limit)
                    .load(conn)
                    .await?
            }
        };
        let ids: Vec<WebhookId> = claimed.into_iter().map(|row| row.id).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        all_rows!(
            conn,
            webhooks::table
                .filter(webhooks::id.eq_any(ids))
                .select(Webhook::as_select())
        )
    }

    /// Gives the lease back, if `owner` still holds it.
    pub async fn release(
        conn: &mut DbConnection,
        id: WebhookId,
        owner: ReplicaId,
    ) -> diesel::QueryResult<()> {
        let row = webhooks::table
            .find(id)
            .filter(webhooks::lease_owner.eq(owner));
        let free = (
            webhooks::lease_until.eq(None::<Timestamp>),
            webhooks::lease_owner.eq(None::<ReplicaId>),
        );
        update_rows!(conn, row, free)?;
        Ok(())
    }

    /// Done with the organization's events up to `sequence`; the next is
    /// due at `retry_at` (`None`: at once).
    pub async fn advance(
        conn: &mut DbConnection,
        id: WebhookId,
        sequence: i64,
        retry_at: Option<DateTime<Utc>>,
    ) -> diesel::QueryResult<()> {
        let set = (
            webhooks::delivered_sequence.eq(sequence),
            webhooks::retry_at.eq(retry_at.map(Timestamp)),
        );
        update_rows!(conn, webhooks::table.find(id), set)?;
        Ok(())
    }

    /// The next event waits until `retry_at`.
    pub async fn retry_later(
        conn: &mut DbConnection,
        id: WebhookId,
        retry_at: DateTime<Utc>,
    ) -> diesel::QueryResult<()> {
        let set = webhooks::retry_at.eq(Some(Timestamp(retry_at)));
        update_rows!(conn, webhooks::table.find(id), set)?;
        Ok(())
    }
}

/// Where a delivery stands.
pub mod delivery_state {
    pub const PENDING: &str = "pending";
    pub const DELIVERED: &str = "delivered";
    pub const FAILED: &str = "failed";
}

/// A row of `webhook_deliveries`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_deliveries, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct WebhookDelivery {
    pub id: WebhookDeliveryId,
    pub webhook_id: WebhookId,
    pub event_sequence: i64,
    pub event_id: EventId,
    pub event_type: String,
    pub state: String,
    pub redelivery: bool,
    pub attempts: i32,
    pub last_status_code: i32,
    pub last_error: String,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// An attempt's result, to record.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    pub state: &'static str,
    pub status_code: i32,
    pub error: String,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl WebhookDelivery {
    /// The webhook's in-order delivery of event `sequence`, made on its
    /// first attempt.
    pub async fn in_order(
        conn: &mut DbConnection,
        webhook: WebhookId,
        sequence: i64,
    ) -> diesel::QueryResult<Option<WebhookDelivery>> {
        first_row!(
            conn,
            webhook_deliveries::table
                .filter(webhook_deliveries::webhook_id.eq(webhook))
                .filter(webhook_deliveries::event_sequence.eq(sequence))
                .filter(webhook_deliveries::redelivery.eq(false))
                .select(WebhookDelivery::as_select())
        )
    }

    /// A new delivery of an event, about to be attempted.
    pub async fn start(
        conn: &mut DbConnection,
        webhook: WebhookId,
        sequence: i64,
        event_id: EventId,
        event_type: &str,
        redelivery: bool,
    ) -> diesel::QueryResult<WebhookDelivery> {
        let now = Timestamp::now();
        let row = (
            webhook_deliveries::id.eq(WebhookDeliveryId::generate()),
            webhook_deliveries::webhook_id.eq(webhook),
            webhook_deliveries::event_sequence.eq(sequence),
            webhook_deliveries::event_id.eq(event_id),
            webhook_deliveries::event_type.eq(event_type),
            webhook_deliveries::state.eq(delivery_state::PENDING),
            webhook_deliveries::redelivery.eq(redelivery),
            webhook_deliveries::attempts.eq(0),
            webhook_deliveries::last_status_code.eq(0),
            webhook_deliveries::last_error.eq(""),
            webhook_deliveries::created_at.eq(now),
            webhook_deliveries::next_attempt_at.eq(Some(now)),
        );
        db_run!(conn => {
            diesel::insert_into(webhook_deliveries::table)
                .values(row)
                .returning(WebhookDelivery::as_returning())
                .get_result(conn)
                .await
        })
    }

    /// Records an attempt.
    pub async fn record(
        conn: &mut DbConnection,
        id: WebhookDeliveryId,
        attempt: &Attempt,
    ) -> diesel::QueryResult<()> {
        let set = (
            webhook_deliveries::state.eq(attempt.state),
            webhook_deliveries::attempts.eq(webhook_deliveries::attempts + 1),
            webhook_deliveries::last_status_code.eq(attempt.status_code),
            webhook_deliveries::last_error.eq(&attempt.error),
            webhook_deliveries::last_attempt_at.eq(Some(Timestamp(attempt.at))),
            webhook_deliveries::next_attempt_at.eq(attempt.next_attempt_at.map(Timestamp)),
        );
        update_rows!(conn, webhook_deliveries::table.find(id), set)?;
        Ok(())
    }

    /// The webhook's redeliveries due at `now`, oldest first.
    pub async fn due_redeliveries(
        conn: &mut DbConnection,
        webhook: WebhookId,
        now: DateTime<Utc>,
        limit: i64,
    ) -> diesel::QueryResult<Vec<WebhookDelivery>> {
        all_rows!(
            conn,
            webhook_deliveries::table
                .filter(webhook_deliveries::webhook_id.eq(webhook))
                .filter(webhook_deliveries::redelivery.eq(true))
                .filter(webhook_deliveries::state.eq(delivery_state::PENDING))
                .filter(webhook_deliveries::next_attempt_at.le(Timestamp(now)))
                .order(webhook_deliveries::created_at)
                .limit(limit)
                .select(WebhookDelivery::as_select())
        )
    }

    pub async fn find(
        conn: &mut DbConnection,
        id: WebhookDeliveryId,
    ) -> diesel::QueryResult<Option<WebhookDelivery>> {
        first_row!(
            conn,
            webhook_deliveries::table
                .find(id)
                .select(WebhookDelivery::as_select())
        )
    }

    /// Up to `limit` of the webhook's deliveries, newest first, made
    /// before `before` (a page's last row: its time and id).
    pub async fn list(
        conn: &mut DbConnection,
        webhook: WebhookId,
        before: Option<(DateTime<Utc>, WebhookDeliveryId)>,
        limit: i64,
    ) -> diesel::QueryResult<Vec<WebhookDelivery>> {
        use diesel::BoolExpressionMethods;
        db_run!(conn => {
            let mut query = webhook_deliveries::table
                .filter(webhook_deliveries::webhook_id.eq(webhook))
                .order((webhook_deliveries::created_at.desc(), webhook_deliveries::id.desc()))
                .limit(limit)
                .select(WebhookDelivery::as_select())
                .into_boxed();
            if let Some((time, id)) = before {
                query = query.filter(
                    webhook_deliveries::created_at.lt(Timestamp(time)).or(
                        webhook_deliveries::created_at
                            .eq(Timestamp(time))
                            .and(webhook_deliveries::id.lt(id)),
                    ),
                );
            }
            query.load(conn).await
        })
    }

    /// A new delivery of `of`'s event, due now, apart from the webhook's
    /// order.
    pub async fn redeliver(
        conn: &mut DbConnection,
        of: &WebhookDelivery,
    ) -> diesel::QueryResult<WebhookDelivery> {
        Self::start(
            conn,
            of.webhook_id,
            of.event_sequence,
            of.event_id,
            &of.event_type,
            true,
        )
        .await
    }

    /// Deletes up to `limit` finished deliveries last attempted before
    /// `before`.
    pub async fn purge_finished(
        conn: &mut DbConnection,
        before: DateTime<Utc>,
        limit: i64,
    ) -> diesel::QueryResult<usize> {
        let oldest = webhook_deliveries::table
            .filter(webhook_deliveries::state.ne(delivery_state::PENDING))
            .filter(webhook_deliveries::last_attempt_at.lt(Timestamp(before)))
            .select(webhook_deliveries::id)
            .limit(limit);
        db_run!(conn => {
            let ids: Vec<WebhookDeliveryId> = oldest.load(conn).await?;
            diesel::delete(webhook_deliveries::table.filter(webhook_deliveries::id.eq_any(ids)))
                .execute(conn)
                .await
        })
    }
}
