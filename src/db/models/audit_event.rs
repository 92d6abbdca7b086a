//! The `audit_events` table: one row per change, inserted in the change's
//! own transaction (so neither commits without the other), and read back
//! newest first.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use diesel::{
    BoolExpressionMethods, ExpressionMethods, Insertable, NullableExpressionMethods, QueryDsl,
    Queryable, Selectable,
};

use crate::db::schema::{audit_events, users};
use crate::db::sql_types::Timestamp;
use crate::db::DbConnection;
use crate::domain::{AuditChange, AuditFilter, AuditRecord, PageCursor, PageRequest, UserId};

/// Who a change is recorded for: the signed-in user (or an operator
/// command), the request and the client's address.
#[derive(Debug, Clone, Default)]
pub struct AuditActor {
    pub user: Option<UserId>,
    pub command: Option<String>,
    pub request_id: Option<String>,
    pub address: Option<IpAddr>,
}

const SUCCEEDED: &str = "succeeded";

#[derive(Insertable)]
#[diesel(table_name = audit_events)]
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
}

impl AuditEvent {
    /// Records a change that succeeded, in the caller's transaction, with
    /// the actor's email as it is now.
    pub async fn record(
        conn: &mut DbConnection,
        actor: &AuditActor,
        record: &AuditRecord,
    ) -> diesel::QueryResult<()> {
        let actor_email = match actor.user {
            Some(id) => first_row!(conn, users::table.find(id).select(users::email))?,
            None => None,
        };
        let changes = serde_json::to_string(&record.changes)
            .map_err(|error| diesel::result::Error::SerializationError(Box::new(error)))?;
        let new = NewAuditEvent {
            occurred_at: Timestamp(Utc::now()),
            action: record.action.name(),
            outcome: SUCCEEDED,
            actor_user_id: actor.user,
            actor_email,
            actor_command: actor.command.as_deref(),
            target_type: record.target.kind.name(),
            target_id: &record.target.id,
            target_owner_id: Some(record.target.owner),
            request_id: actor.request_id.as_deref(),
            client_address: actor.address.map(|address| address.to_string()),
            changes,
        };
        crate::db::db_run!(conn => {
            diesel_async::RunQueryDsl::execute(
                diesel::insert_into(audit_events::table).values(&new),
                conn,
            )
            .await
        })
        .map(drop)
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
            if let Some(user) = filter.visible_to {
                query = query.filter(
                    audit_events::target_owner_id.assume_not_null().eq(user).and(
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
