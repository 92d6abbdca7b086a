//! The `audit_events` table: one row per change, inserted in the change's
//! own transaction (so neither commits without the other), and read back
//! newest first.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use diesel::{
    BoolExpressionMethods, ExpressionMethods, Insertable, NullableExpressionMethods, QueryDsl,
    Queryable, Selectable,
};

use crate::db::models::OrganizationEvent;
use crate::db::schema::{audit_events, organization_members, users};
use crate::db::sql_types::Timestamp;
use crate::db::DbConnection;
use crate::domain::{
    AuditChange, AuditFilter, AuditRecord, AuditViewer, OrganizationId, PageCursor, PageRequest,
    ServiceAccountId, TargetType, UserId,
};

/// Who a change is recorded for: the signed-in user (or an operator
/// command), the request and the client's address.
#[derive(Debug, Clone, Default)]
pub struct AuditActor {
    pub user: Option<UserId>,
    /// The user's email, when the caller knows it already (else it is read
    /// with the event).
    pub email: Option<std::sync::Arc<str>>,
    /// A service account, with its name at the time.
    pub service_account: Option<(ServiceAccountId, String)>,
    pub command: Option<String>,
    pub request_id: Option<String>,
    pub address: Option<IpAddr>,
}

const SUCCEEDED: &str = "succeeded";
const DENIED: &str = "denied";

/// Refused attempts repeated within this many seconds share one row.
const REFUSAL_WINDOW_SECS: i64 = 3600;

#[derive(Insertable)]
#[diesel(table_name = audit_events)]
#[diesel(treat_none_as_default_value = false)] // see db::models: prepared once
struct NewAuditEvent<'a> {
    occurred_at: Timestamp,
    action: &'a str,
    outcome: &'a str,
    actor_user_id: Option<UserId>,
    actor_email: Option<String>,
    actor_command: Option<&'a str>,
    target_type: &'a str,
    target_id: &'a str,
    target_owner_id: Option<UserId>,
    request_id: Option<&'a str>,
    client_address: Option<String>,
    changes: String,
    last_occurred_at: Timestamp,
    aggregate_key: Option<String>,
    organization_id: Option<OrganizationId>,
    actor_service_account_id: Option<ServiceAccountId>,
    actor_service_account_name: Option<&'a str>,
}

/// A row of `audit_events`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_events, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct AuditEvent {
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub action: String,
    pub outcome: String,
    pub actor_user_id: Option<UserId>,
    pub actor_email: Option<String>,
    pub actor_command: Option<String>,
    pub target_type: String,
    pub target_id: String,
    pub target_owner_id: Option<UserId>,
    pub request_id: Option<String>,
    pub client_address: Option<String>,
    changes: String,
    pub repeats: i64,
    pub last_occurred_at: DateTime<Utc>,
    pub organization_id: Option<OrganizationId>,
    pub actor_service_account_id: Option<ServiceAccountId>,
    pub actor_service_account_name: Option<String>,
}

impl AuditEvent {
    /// Records a change that succeeded, in the caller's transaction, with
    /// the actor's email as it is now, and with it the change as an event
    /// of its organization (the outbox; [`OrganizationEvent`]).
    pub async fn record(
        conn: &mut DbConnection,
        actor: &AuditActor,
        record: &AuditRecord,
    ) -> diesel::QueryResult<()> {
        let new = Self::new_row(conn, actor, record, SUCCEEDED, None).await?;
        let insert = diesel::insert_into(audit_events::table).values(&new);
        OrganizationEvent::record_with_audit(conn, record, insert).await
    }

    /// [`Self::record`] and `change` (an insert), as one statement that
    /// commits on its own: see [`OrganizationEvent::record_with_change`].
    /// Returns the rows `change` inserted.
    pub async fn record_with_change<C>(
        conn: &mut DbConnection,
        actor: &AuditActor,
        record: &AuditRecord,
        change: C,
    ) -> diesel::QueryResult<usize>
    where
        C: diesel::query_builder::QueryFragment<diesel::pg::Pg>
            + diesel::query_builder::QueryId
            + Send,
    {
        let new = Self::new_row(conn, actor, record, SUCCEEDED, None).await?;
        let insert = diesel::insert_into(audit_events::table).values(&new);
        let DbConnection::Postgres(conn) = conn else {
            return Err(diesel::result::Error::NotInTransaction);
        };
        OrganizationEvent::record_with_change(conn, record, insert, change).await
    }

    /// Records a refused attempt: a new row, or one more repeat of the same
    /// attempt (action, actor, target, address) within the hour.
    pub async fn record_refusal(
        conn: &mut DbConnection,
        actor: &AuditActor,
        record: &AuditRecord,
    ) -> diesel::QueryResult<()> {
        let now = Utc::now();
        let window = now.timestamp().div_euclid(REFUSAL_WINDOW_SECS);
        let key = format!(
            "{}|{}{}|{}|{}:{}|{}|{window}",
            record.action.name(),
            actor.user.map(|id| id.to_string()).unwrap_or_default(),
            actor
                .service_account
                .as_ref()
                .map(|(id, _)| id.to_string())
                .unwrap_or_default(),
            actor.command.as_deref().unwrap_or_default(),
            record.target.kind.name(),
            record.target.id,
            actor
                .address
                .map(|address| address.to_string())
                .unwrap_or_default(),
        );
        let new = Self::new_row(conn, actor, record, DENIED, Some(key)).await?;
        crate::db::db_run!(conn => {
            diesel_async::RunQueryDsl::execute(
                crate::db::PreparedOnce(
                    diesel::insert_into(audit_events::table)
                        .values(&new)
                        .on_conflict(audit_events::aggregate_key)
                        .do_update()
                        .set((
                            audit_events::repeats.eq(audit_events::repeats + 1),
                            audit_events::last_occurred_at
                                .eq(diesel::upsert::excluded(audit_events::last_occurred_at)),
                        )),
                ),
                conn,
            )
            .await
        })
        .map(drop)
    }

    async fn new_row<'a>(
        conn: &mut DbConnection,
        actor: &'a AuditActor,
        record: &'a AuditRecord,
        outcome: &'a str,
        aggregate_key: Option<String>,
    ) -> diesel::QueryResult<NewAuditEvent<'a>> {
        let actor_email = match (actor.user, &actor.email) {
            (Some(_), Some(email)) => Some(email.to_string()),
            (Some(id), None) => first_row!(conn, users::table.find(id).select(users::email))?,
            (None, _) => None,
        };
        let changes = serde_json::to_string(&record.changes)
            .map_err(|error| diesel::result::Error::SerializationError(Box::new(error)))?;
        let now = Utc::now();
        Ok(NewAuditEvent {
            occurred_at: Timestamp(now),
            action: record.action.name(),
            outcome,
            actor_user_id: actor.user,
            actor_email,
            actor_command: actor.command.as_deref(),
            target_type: record.target.kind.name(),
            target_id: &record.target.id,
            target_owner_id: record.target.owner,
            request_id: actor.request_id.as_deref(),
            client_address: actor.address.map(|address| address.to_string()),
            changes,
            last_occurred_at: Timestamp(now),
            aggregate_key,
            organization_id: record.target.organization,
            actor_service_account_id: actor.service_account.as_ref().map(|(id, _)| *id),
            actor_service_account_name: actor
                .service_account
                .as_ref()
                .map(|(_, name)| name.as_str()),
        })
    }

    /// Deletes up to `limit` events older than `before`; returns how many.
    pub async fn purge(
        conn: &mut DbConnection,
        before: DateTime<Utc>,
        limit: i64,
    ) -> diesel::QueryResult<usize> {
        let oldest = audit_events::table
            .filter(audit_events::last_occurred_at.lt(Timestamp(before)))
            .order(audit_events::id)
            .select(audit_events::id)
            .limit(limit);
        crate::db::db_run!(conn => {
            let ids: Vec<i64> = diesel_async::RunQueryDsl::load(oldest, conn).await?;
            diesel_async::RunQueryDsl::execute(
                diesel::delete(audit_events::table.filter(audit_events::id.eq_any(ids))),
                conn,
            )
            .await
        })
    }

    /// The events `filter` selects, newest first, one page.
    pub async fn list(
        conn: &mut DbConnection,
        filter: &AuditFilter,
        page: &PageRequest<i64>,
    ) -> diesel::QueryResult<Vec<AuditEvent>> {
        use diesel::SelectableHelper;
        use diesel_async::RunQueryDsl;
        crate::db::db_run!(conn => {
            let mut query = audit_events::table
                .select(AuditEvent::as_select())
                .order(audit_events::id.desc())
                .limit(page.fetch_limit())
                .into_boxed();
            if let Some(after) = &page.after {
                query = query.filter(audit_events::id.lt(after.id));
            }
            if let Some(action) = filter.action {
                query = query.filter(audit_events::action.eq(action.name()));
            }
            if let Some(actor) = filter.actor {
                query = query.filter(audit_events::actor_user_id.assume_not_null().eq(actor));
            }
            if let Some(kind) = filter.target_type {
                query = query.filter(audit_events::target_type.eq(kind.name()));
            }
            if let Some(id) = &filter.target_id {
                query = query.filter(audit_events::target_id.eq(id.clone()));
            }
            if let Some(start) = filter.start {
                query = query.filter(audit_events::occurred_at.ge(Timestamp(start)));
            }
            if let Some(end) = filter.end {
                query = query.filter(audit_events::occurred_at.lt(Timestamp(end)));
            }
            if let Some(organization) = filter.organization {
                query = query.filter(audit_events::organization_id.assume_not_null().eq(organization));
            }
            if let AuditViewer::ServiceAccount { id, organization } = filter.viewer {
                query = query.filter(
                    audit_events::organization_id
                        .assume_not_null()
                        .eq(organization)
                        .and(
                            audit_events::outcome.eq(SUCCEEDED).or(audit_events::actor_service_account_id
                                .assume_not_null()
                                .eq(id)),
                        ),
                );
            }
            if let AuditViewer::User(user) = filter.viewer {
                let theirs = organization_members::table
                    .filter(organization_members::user_id.eq(user))
                    .select(organization_members::organization_id);
                // Their own account and memberships by owner; what belongs
                // to an organization (chatbots, keys) only while they are a
                // member: a chatbot's owner_id outlives their leaving.
                let own_account_or_membership = audit_events::target_owner_id
                    .assume_not_null()
                    .eq(user)
                    .and(
                        audit_events::organization_id
                            .is_null()
                            .or(audit_events::target_type.eq(TargetType::Member.name())),
                    );
                query = query.filter(
                    own_account_or_membership
                        .or(audit_events::organization_id.assume_not_null().eq_any(theirs))
                        .and(
                            audit_events::outcome
                                .eq(SUCCEEDED)
                                .or(audit_events::actor_user_id.assume_not_null().eq(user)),
                        ),
                );
            }
            query.load(conn).await
        })
    }

    pub fn cursor(&self) -> PageCursor<i64> {
        PageCursor {
            create_time: self.occurred_at,
            id: self.id,
        }
    }

    /// The fields the event changed (a stored value that does not read
    /// back, which only a hand-edited row could hold, reads as none).
    pub fn changes(&self) -> Vec<AuditChange> {
        serde_json::from_str(&self.changes).unwrap_or_default()
    }
}
