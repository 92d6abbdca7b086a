//! PostgreSQL LISTEN/NOTIFY: how replicas tell each other that cached
//! API-key rows went stale, through the database they already share.
//!
//! A LISTEN can be in effect and still receive nothing (through a PgBouncer
//! in transaction mode, which hands the listening server connection to
//! other clients). So the listener proves the path every
//! [`HEARTBEAT_INTERVAL`]: it sends a heartbeat through the pool, on the
//! same channel and the way every change sends its notification, and the
//! caches serve only while its own heartbeats come back. One missing for
//! [`HEARTBEAT_TIMEOUT`] is one WARN and the caches are bypassed; the next
//! that arrives turns them back on, with one INFO.

use std::future::poll_fn;
use std::time::Duration;

use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use super::{Database, DbConnection, PgConnector};
use crate::domain::{ApiKeyId, ChatbotId, OrganizationId, ServiceAccountId, SessionId, UserId};

/// How often the listener sends itself a heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// How long the listener waits for its own heartbeat before it stops
/// trusting that it hears every change.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

/// The channel carrying API-key cache invalidations.
pub const INVALIDATION_CHANNEL: &str = "chatbot_api_key_invalidation";

/// What a committed change made stale, as other replicas learn it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// One API key changed (revoked, rotated, deleted).
    Key(ApiKeyId),
    /// A chatbot changed or was deleted, and with it its keys.
    Chatbot(ChatbotId),
    /// A user changed (role, password) or was deleted, and with them their
    /// sessions, chatbots and keys.
    Owner(UserId),
    /// One session ended (logout, refresh-token re-use).
    Session(SessionId),
    /// Who belongs to an organization, or with which role, changed (a
    /// member joined, left, was removed or re-roled; the organization was
    /// deleted).
    Organization(OrganizationId),
    /// A service account's token was revoked, or the account deleted.
    ServiceAccount(ServiceAccountId),
}

impl Invalidation {
    /// The `NOTIFY` payload: `key:<id>`, `chatbot:<uuid>`, `user:<uuid>`,
    /// `session:<uuid>`, `organization:<uuid>` or `service_account:<uuid>`. A replica of the previous
    /// version reads a kind it does not know as "anything may be stale" and
    /// empties its caches.
    pub fn payload(&self) -> String {
        match self {
            Self::Key(id) => format!("key:{id}"),
            Self::Chatbot(id) => format!("chatbot:{id}"),
            Self::Owner(id) => format!("user:{id}"),
            Self::Session(id) => format!("session:{id}"),
            Self::Organization(id) => format!("organization:{id}"),
            Self::ServiceAccount(id) => format!("service_account:{id}"),
        }
    }

    pub fn parse(payload: &str) -> Option<Self> {
        let (kind, id) = payload.split_once(':')?;
        match kind {
            "key" => id.parse().ok().map(Self::Key),
            "chatbot" => id.parse().ok().map(Self::Chatbot),
            "user" => id.parse().ok().map(Self::Owner),
            "session" => id.parse().ok().map(Self::Session),
            "organization" => id.parse().ok().map(Self::Organization),
            "service_account" => id.parse().ok().map(Self::ServiceAccount),
            _ => None,
        }
    }
}

/// What the listener reports to its handler.
#[derive(Debug)]
pub enum ListenEvent {
    /// `LISTEN` is in effect: from now on no notification is missed.
    Listening,
    /// A notification's payload.
    Notification(String),
    /// The connection was lost; notifications may be missed until the next
    /// `Listening`.
    Lost,
}

/// Tells every replica (this one included) about `change`. Inside a
/// transaction PostgreSQL delivers it at commit, and only if it commits. On
/// SQLite it does nothing: one process serves a SQLite file, so there is no
/// one else to tell.
pub async fn notify_invalidation(
    conn: &mut DbConnection,
    change: &Invalidation,
) -> diesel::QueryResult<()> {
    match conn {
        DbConnection::Postgres(conn) => diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<Text, _>(INVALIDATION_CHANNEL)
            .bind::<Text, _>(change.payload())
            .execute(&mut **conn)
            .await
            .map(drop),
        DbConnection::Sqlite(_) => Ok(()),
    }
}

/// Listens on [`INVALIDATION_CHANNEL`] over a dedicated connection (with
/// the TLS its URL asks for) until `stop` fires, reconnecting with backoff
/// after a failure, and sending its heartbeats through `pool`.
pub async fn listen_for_invalidations(
    connector: PgConnector,
    pool: Database,
    mut handler: impl FnMut(ListenEvent) + Send,
    mut stop: watch::Receiver<bool>,
) {
    let heartbeat = Heartbeat::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&connector, &pool, &heartbeat, &mut handler, &mut stop).await {
            Ok(()) => return,
            Err(error) => {
                handler(ListenEvent::Lost);
                tracing::warn!(
                    error = format!("{error:#}"),
                    "API key invalidation listener lost; bypassing the cache until it is back"
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// This listener's heartbeat: `key:-N`, with N its own random nonce. No key
/// has a negative id, so a replica of the previous version reads it as an
/// invalidation of nothing (its caches survive a rolling upgrade), and
/// other replicas' heartbeats are told apart from this one's.
struct Heartbeat {
    beat: Invalidation,
    payload: String,
}

impl Heartbeat {
    fn new() -> Self {
        let nonce = rand::Rng::gen_range(&mut rand::thread_rng(), 1..i64::MAX);
        let beat = Invalidation::Key(ApiKeyId(-nonce));
        Self {
            beat,
            payload: beat.payload(),
        }
    }

    /// Sends it the way changes send theirs ([`notify_invalidation`] on a
    /// pooled connection). A failure is the pool's (the heartbeat then
    /// stays away).
    fn send(&self, pool: Database) -> impl std::future::Future<Output = ()> + Send + 'static {
        let beat = self.beat;
        async move {
            let sent = async {
                let mut conn = pool.conn().await?;
                notify_invalidation(&mut conn, &beat).await?;
                anyhow::Ok(())
            };
            if let Err(error) = sent.await {
                tracing::debug!(
                    error = format!("{error:#}"),
                    "could not send a listener heartbeat"
                );
            }
        }
    }

    /// Whether `payload` is a heartbeat (this listener's or another's).
    fn is_heartbeat(payload: &str) -> bool {
        matches!(Invalidation::parse(payload), Some(Invalidation::Key(ApiKeyId(id))) if id < 0)
    }
}

async fn listen_once(
    connector: &PgConnector,
    pool: &Database,
    heartbeat: &Heartbeat,
    handler: &mut (impl FnMut(ListenEvent) + Send),
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut config = connector.config().clone();
    // Notice a silently dead peer in seconds rather than hours.
    config
        .connect_timeout(Duration::from_secs(5))
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3);
    let (client, mut connection) = connector.connect_with(&config).await?;
    // The connection object does the I/O; it must be polled for the client's
    // LISTEN to complete, and it yields the notifications.
    let (sender, mut received) = mpsc::unbounded_channel();
    let io = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    let _ = sender.send(Ok(notification.payload().to_owned()));
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    let _ = sender.send(Err(error));
                    return;
                }
                None => return,
            }
        }
    });
    let result = async {
        client
            .batch_execute(&format!("LISTEN {INVALIDATION_CHANNEL}"))
            .await?;
        // Live once the first heartbeat comes back: only then is it known
        // that this LISTEN hears what the pool sends.
        // Since the LISTEN, or the last heartbeat heard; `warned` once per
        // stretch without one.
        let (mut live, mut warned) = (false, false);
        let mut last_heard = tokio::time::Instant::now();
        let mut beat = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            tokio::select! {
                message = received.recv() => match message {
                    Some(Ok(payload)) if payload == heartbeat.payload => {
                        last_heard = tokio::time::Instant::now();
                        if !live {
                            live = true;
                            handler(ListenEvent::Listening);
                            match std::mem::replace(&mut warned, false) {
                                false => tracing::info!("listening for API key invalidations"),
                                true => tracing::info!(
                                    "the invalidation listener hears its notifications again; caching again"
                                ),
                            }
                        }
                    }
                    Some(Ok(payload)) if Heartbeat::is_heartbeat(&payload) => {}
                    Some(Ok(payload)) => handler(ListenEvent::Notification(payload)),
                    Some(Err(error)) => return Err(error.into()),
                    None => anyhow::bail!("the listener connection closed"),
                },
                _ = beat.tick() => {
                    if !warned && last_heard.elapsed() > HEARTBEAT_TIMEOUT {
                        warned = true;
                        if std::mem::replace(&mut live, false) {
                            handler(ListenEvent::Lost);
                        }
                        tracing::warn!(
                            "the invalidation listener does not hear its own notifications (a \
                             pooler in transaction mode between it and PostgreSQL? see \
                             DATABASE_LISTEN_URL); bypassing the caches until it does"
                        );
                    }
                    // Not awaited here: a pool slow to lend a connection
                    // must not hold back the notifications.
                    tokio::spawn(heartbeat.send(pool.clone()));
                }
                _ = stop.changed() => return Ok(()),
            }
        }
    }
    .await;
    io.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidation_payloads_round_trip() {
        for change in [
            Invalidation::Key(ApiKeyId(42)),
            Invalidation::Chatbot(ChatbotId::generate()),
            Invalidation::Owner(UserId::generate()),
            Invalidation::Session(SessionId::generate()),
        ] {
            assert_eq!(Invalidation::parse(&change.payload()), Some(change));
        }
        assert_eq!(Invalidation::parse("bogus"), None);
        let heartbeat = Heartbeat::new();
        assert!(Heartbeat::is_heartbeat(&heartbeat.payload));
        assert!(!Heartbeat::is_heartbeat(
            &Invalidation::Key(ApiKeyId(42)).payload()
        ));
        assert_eq!(Invalidation::parse("key:x"), None);
    }
}
