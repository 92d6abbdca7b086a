//! The one shape of a change: its statements, the audit records of what it
//! changed (and the organizations' events of them), and the NOTIFY that tells every replica's caches what went stale
//! commit together in one transaction, or none of them does.
//! [`crate::services::AppState::write`] adds dropping the stale entries from
//! this process's own caches after the commit.

use diesel_async::scoped_futures::{ScopedBoxFuture, ScopedFutureExt};

use super::models::{AuditActor, AuditEvent, Organization};
use super::{notify_invalidation, DbConnection, Invalidation};
use crate::domain::{AuditRecord, OrganizationId};

/// What a change's statements did: their result, and the audit record of
/// each change they made. A change that turned out to change nothing (a
/// revoked key revoked again, a row already gone) records nothing.
#[must_use]
pub struct Written<R> {
    value: R,
    records: Vec<AuditRecord>,
}

impl<R> Written<R> {
    /// A change the audit log records as `record`.
    pub fn recorded(value: R, record: AuditRecord) -> Self {
        Self::recorded_all(value, vec![record])
    }

    /// A change the audit log records as several events (an UpdateUser that
    /// changes the email and the role).
    pub fn recorded_all(value: R, records: Vec<AuditRecord>) -> Self {
        Self { value, records }
    }

    /// Nothing the audit log keeps: nothing changed, or the change is
    /// bookkeeping no one audits (a refresh token's rotation).
    pub fn unrecorded(value: R) -> Self {
        Self::recorded_all(value, Vec::new())
    }
}

/// Runs `change` in a transaction that also records its audit records as
/// done by `actor` and, with `stale`, notifies every replica (PostgreSQL
/// delivers the NOTIFY at commit, and only if it commits). The caller drops
/// its own cache entries after this returns.
pub async fn write<'a, R, E, F>(
    conn: &mut DbConnection,
    actor: AuditActor,
    stale: Option<Invalidation>,
    change: F,
) -> Result<R, E>
where
    F: for<'r> FnOnce(&'r mut DbConnection) -> ScopedBoxFuture<'a, 'r, Result<Written<R>, E>>
        + Send
        + 'a,
    E: From<diesel::result::Error> + Send + 'a,
    R: Send + 'a,
{
    write_in(conn, None, actor, stale, change).await
}

/// [`write`] of a change to rows that deleting `organization` deletes with
/// it (its service accounts, invitations, webhooks): the organization's row
/// is held first ([`Organization::hold`]), the order its delete locks them
/// in, so the two wait for each other instead of deadlocking. A change that
/// waited for the delete finds its rows gone. `None` is [`write`].
pub async fn write_in<'a, R, E, F>(
    conn: &mut DbConnection,
    organization: Option<OrganizationId>,
    actor: AuditActor,
    stale: Option<Invalidation>,
    change: F,
) -> Result<R, E>
where
    F: for<'r> FnOnce(&'r mut DbConnection) -> ScopedBoxFuture<'a, 'r, Result<Written<R>, E>>
        + Send
        + 'a,
    E: From<diesel::result::Error> + Send + 'a,
    R: Send + 'a,
{
    conn.transaction(|conn| {
        async move {
            if let Some(organization) = organization {
                Organization::hold(conn, organization).await?;
            }
            let Written { value, records } = change(&mut *conn).await?;
            for record in &records {
                // With the change as an event of its organization (the outbox).
                AuditEvent::record(conn, &actor, record).await?;
            }
            if let Some(stale) = stale {
                notify_invalidation(conn, &stale).await?;
            }
            Ok(value)
        }
        .scope_boxed()
    })
    .await
}

/// A change that is one insert of a row known before it is written, in an
/// organization. On PostgreSQL the insert, its audit record and the
/// organization's event are one statement that commits on its own: one
/// round trip where [`write`] takes four (BEGIN, the insert, the records,
/// COMMIT), and the organization's counter is locked only while PostgreSQL
/// commits, not across round trips. Elsewhere (SQLite, or a change outside
/// any organization), [`write`] runs it. Returns the rows inserted.
pub async fn insert<I>(
    conn: &mut DbConnection,
    actor: AuditActor,
    record: AuditRecord,
    insert: I,
) -> diesel::QueryResult<usize>
where
    I: diesel::query_builder::QueryFragment<diesel::pg::Pg>
        + diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite>
        + diesel::query_builder::QueryId
        + Send,
{
    if matches!(conn, DbConnection::Postgres(_)) && record.target.organization.is_some() {
        return AuditEvent::record_with_change(conn, &actor, &record, insert).await;
    }
    write(conn, actor, None, |conn| {
        async move {
            let inserted = crate::db::db_run!(conn => {
                diesel_async::RunQueryDsl::execute(insert, conn).await
            })?;
            Ok(Written::recorded(inserted, record))
        }
        .scope_boxed()
    })
    .await
}
