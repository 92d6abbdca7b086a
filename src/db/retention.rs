//! Deletes what has outlived its use, so no table grows with traffic
//! forever: audit events past their retention, refresh tokens long
//! expired, sessions long ended, invitations long expired, credit
//! reservations and webhook deliveries long finished, creates' request ids
//! after a day, and hourly usage
//! rows past theirs. Every
//! replica runs it at start and then hourly; replicas that purge at once
//! only find less to delete. Each statement deletes a small batch, so a
//! purge never holds locks or a connection for long and requests go
//! between its batches. The login throttle's ended windows are purged with
//! the throttle (`auth::LoginThrottle::purge_ended`).

use chrono::{DateTime, TimeDelta, Utc};
use diesel_async::scoped_futures::{ScopedBoxFuture, ScopedFutureExt};

use crate::db::models::{
    AuditEvent, CreateRequest, Invitation, KeyUsage, OrganizationEvent, RefreshToken, Reservation,
    Session, WebhookDelivery,
};

/// How long a create's request id is remembered (AIP-155's window).
pub const REQUEST_ID_WINDOW: TimeDelta = TimeDelta::days(1);
use crate::db::{Database, DbConnection};

/// Rows deleted per statement.
pub const PURGE_BATCH: i64 = 1000;

/// How long each kind of row is kept after it stops mattering.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Audit events, from their last repeat.
    pub audit_events: TimeDelta,
    /// Refresh tokens and invitations from their expiry, sessions from
    /// their end, credit reservations from when they were finished.
    pub ended_sessions: TimeDelta,
    /// Usage rows, from their hour.
    pub usage: TimeDelta,
    /// Whether events are published to NATS: then an organization's event
    /// is kept, whatever its age, until it is published.
    pub keep_unpublished_events: bool,
}

/// The tables purged, in order: refresh tokens before the sessions they
/// keep alive.
#[derive(Debug, Clone, Copy)]
enum Purged {
    AuditEvents,
    OrganizationEvents,
    RefreshTokens,
    Sessions,
    Invitations,
    Reservations,
    WebhookDeliveries,
    Usage,
    CreateRequests,
}

impl Purged {
    const ALL: [Self; 9] = [
        Self::AuditEvents,
        Self::OrganizationEvents,
        Self::RefreshTokens,
        Self::Sessions,
        Self::Usage,
        Self::Invitations,
        Self::Reservations,
        Self::WebhookDeliveries,
        Self::CreateRequests,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::AuditEvents => "audit events",
            Self::OrganizationEvents => "organizations' events",
            Self::RefreshTokens => "expired refresh tokens",
            Self::Sessions => "ended sessions",
            Self::Invitations => "expired invitations",
            Self::Reservations => "finished credit reservations",
            Self::WebhookDeliveries => "finished webhook deliveries",
            Self::Usage => "usage rows",
            Self::CreateRequests => "create request ids",
        }
    }

    fn kept(self, retention: &Retention) -> TimeDelta {
        match self {
            // Kept as long as the audit log they mirror.
            Self::AuditEvents | Self::OrganizationEvents => retention.audit_events,
            Self::RefreshTokens
            | Self::Sessions
            | Self::Invitations
            | Self::Reservations
            | Self::WebhookDeliveries => retention.ended_sessions,
            Self::Usage => retention.usage,
            Self::CreateRequests => REQUEST_ID_WINDOW,
        }
    }

    async fn batch(
        self,
        conn: &mut DbConnection,
        before: DateTime<Utc>,
        retention: &Retention,
    ) -> diesel::QueryResult<usize> {
        match self {
            Self::AuditEvents => AuditEvent::purge(conn, before, PURGE_BATCH).await,
            Self::OrganizationEvents => {
                let keep_unpublished = retention.keep_unpublished_events;
                OrganizationEvent::purge(conn, before, keep_unpublished, PURGE_BATCH).await
            }
            Self::RefreshTokens => RefreshToken::purge_expired(conn, before, PURGE_BATCH).await,
            Self::Sessions => Session::purge_ended(conn, before, PURGE_BATCH).await,
            Self::Invitations => Invitation::purge_expired(conn, before, PURGE_BATCH).await,
            Self::Usage => KeyUsage::purge(conn, before, PURGE_BATCH).await,
            Self::Reservations => Reservation::purge_finished(conn, before, PURGE_BATCH).await,
            Self::WebhookDeliveries => {
                WebhookDelivery::purge_finished(conn, before, PURGE_BATCH).await
            }
            Self::CreateRequests => CreateRequest::purge(conn, before, PURGE_BATCH).await,
        }
    }
}

/// Purges every table once, logging what went (INFO) and what could not
/// (WARN; the next run tries again).
pub async fn purge_expired(db: &Database, retention: &Retention) {
    let now = Utc::now();
    for table in Purged::ALL {
        let before = now
            .checked_sub_signed(table.kept(retention))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        match purge_table(db, table, before, retention).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged {}", table.name()),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "could not purge {}; will retry",
                table.name()
            ),
        }
    }
}

/// Deletes `table`'s rows older than `before`, a batch at a time, taking a
/// connection per batch; returns how many went.
async fn purge_table(
    db: &Database,
    table: Purged,
    before: DateTime<Utc>,
    retention: &Retention,
) -> anyhow::Result<usize> {
    purge_in_batches(db, |conn| {
        table.batch(conn, before, retention).scope_boxed()
    })
    .await
}

/// Runs `batch` (a delete of at most [`PURGE_BATCH`] rows) until it
/// deletes nothing, each time on a connection of its own and yielding in
/// between, so requests go between batches; returns how many went.
pub async fn purge_in_batches<'a>(
    db: &Database,
    mut batch: impl for<'c> FnMut(
        &'c mut DbConnection,
    ) -> ScopedBoxFuture<'a, 'c, diesel::QueryResult<usize>>,
) -> anyhow::Result<usize> {
    let mut purged = 0;
    loop {
        let deleted = {
            let mut conn = db.conn().await?;
            batch(&mut conn).await?
        };
        purged += deleted;
        if deleted == 0 {
            return Ok(purged);
        }
        tokio::task::yield_now().await;
    }
}
