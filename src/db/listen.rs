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
//!
//! Every heartbeat is also a *sync point*: when one comes back, every
//! notification committed before it was sent has been heard (PostgreSQL
//! delivers notifications in commit order). The known-keys set
//! ([`crate::hot_path::known_keys`]) relies on that, and asks for extra
//! heartbeats on demand ([`BarrierRequest`]).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::time::Duration;

use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use tokio::sync::{mpsc, oneshot, watch};
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

/// The channel on which a trigger announces every key inserted: the first 8
/// bytes of its digest, in hex.
pub const KEY_ANNOUNCEMENT_CHANNEL: &str = "chatbot_api_keys";

/// The channel on which triggers announce every change to chatbots or to
/// organizations' members (the table's name): ListChatbots' cached pages
/// are dropped when one arrives.
pub const CHATBOT_CHANGES_CHANNEL: &str = "chatbot_changes";

/// A request for a barrier: answered once every notification committed
/// before it was made has been heard; dropped if the listener fails first.
pub type BarrierRequest = oneshot::Sender<()>;

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
    /// A key was inserted: the hex fingerprint the trigger sent.
    KeyAnnounced(String),
    /// A chatbot or an organization's membership changed.
    ChatbotsChanged,
    /// Every notification committed before this time (Unix milliseconds)
    /// has been heard.
    Synced(i64),
    /// The connection was lost; notifications may be missed until the next
    /// `Listening`.
    Lost,
}

/// Which channel a notification came on.
enum Heard {
    Invalidation,
    KeyAnnounced,
    ChatbotsChanged,
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

/// Listens on [`INVALIDATION_CHANNEL`] and [`KEY_ANNOUNCEMENT_CHANNEL`]
/// over a dedicated connection (with the TLS its URL asks for) until `stop`
/// fires, reconnecting with backoff after a failure, sending its heartbeats
/// through `pool`, and an extra one for the barriers `barriers` asks for.
pub async fn listen_for_invalidations(
    connector: PgConnector,
    pool: Database,
    mut handler: impl FnMut(ListenEvent) + Send,
    mut barriers: mpsc::Receiver<BarrierRequest>,
    mut stop: watch::Receiver<bool>,
) {
    let heartbeat = Heartbeat::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let listened = listen_once(
            &connector,
            &pool,
            &heartbeat,
            &mut handler,
            &mut barriers,
            &mut stop,
        )
        .await;
        match listened {
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

/// This listener's heartbeats: `key:-N`, with N its own random base plus
/// a count, so each beat is told apart from the others and from other
/// replicas'. No key has a negative id, so a replica of the previous
/// version reads one as an invalidation of nothing (its caches survive a
/// rolling upgrade).
struct Heartbeat {
    base: i64,
}

/// How a beat is sent.
#[derive(Clone)]
enum Via {
    /// Through the pool, the way every change sends its notification: a
    /// heartbeat, which proves that what the pool sends is heard.
    Pool(Database),
    /// On the listening connection itself, without waiting for the pool: a
    /// barrier, which proves only the order (PostgreSQL delivers
    /// notifications in commit order, its own included).
    Listener(std::sync::Arc<tokio_postgres::Client>),
}

/// A beat sent and not yet heard back.
struct Beat {
    id: i64,
    /// Unix milliseconds, read before the beat was sent.
    sent_ms: i64,
    /// Sent through the pool.
    proves_path: bool,
    /// Barriers it answers.
    barriers: Vec<BarrierRequest>,
}

impl Heartbeat {
    fn new() -> Self {
        // Room below for a count that never wraps to positive.
        let base = rand::Rng::gen_range(&mut rand::thread_rng(), 1..i64::MAX / 2);
        Self { base }
    }

    /// Sends beat `count`, not awaited (a pool slow to lend a connection
    /// must not hold back the notifications). A failure is the pool's or
    /// the connection's: the beat then stays away.
    fn send(&self, via: &Via, count: u64, barriers: Vec<BarrierRequest>) -> Beat {
        let id = self.base + (count % (i64::MAX as u64 / 2)) as i64;
        let beat = Invalidation::Key(ApiKeyId(-id));
        let sent_ms = chrono::Utc::now().timestamp_millis();
        let proves_path = matches!(via, Via::Pool(_));
        let via = via.clone();
        tokio::spawn(async move {
            let sent = async {
                match via {
                    Via::Pool(pool) => {
                        let mut conn = pool.conn().await?;
                        notify_invalidation(&mut conn, &beat).await?;
                    }
                    Via::Listener(client) => {
                        // One round trip of the simple protocol; the payload
                        // is `key:-` and digits, nothing to quote.
                        let notify = format!(
                            "SELECT pg_notify('{INVALIDATION_CHANNEL}', '{}')",
                            beat.payload()
                        );
                        client.batch_execute(&notify).await?;
                    }
                }
                anyhow::Ok(())
            };
            if let Err(error) = sent.await {
                tracing::debug!(
                    error = format!("{error:#}"),
                    "could not send a listener heartbeat"
                );
            }
        });
        Beat {
            id,
            sent_ms,
            proves_path,
            barriers,
        }
    }

    /// The beat id of `payload`, if it is a heartbeat (this listener's or
    /// another's).
    fn beat_id(payload: &str) -> Option<i64> {
        match Invalidation::parse(payload) {
            Some(Invalidation::Key(ApiKeyId(id))) if id < 0 => Some(-id),
            _ => None,
        }
    }
}

/// The beats this listener has out, oldest first.
#[derive(Default)]
struct Outstanding {
    beats: VecDeque<Beat>,
    count: u64,
    /// Barriers waiting for a beat sent after they were asked for.
    waiting: Vec<BarrierRequest>,
}

impl Outstanding {
    fn send(&mut self, heartbeat: &Heartbeat, via: &Via, barriers: Vec<BarrierRequest>) {
        self.count += 1;
        let beat = heartbeat.send(via, self.count, barriers);
        self.beats.push_back(beat);
    }

    /// Whether a beat carrying barriers is still out (and not given up
    /// on: its barriers wait no longer than a second).
    fn barrier_out(&self) -> bool {
        let recent = chrono::Utc::now().timestamp_millis() - 1000;
        self.beats
            .iter()
            .any(|beat| !beat.barriers.is_empty() && beat.sent_ms >= recent)
    }

    /// Beat `id` came back: everything committed before it was sent has
    /// been heard, so its barriers and those of every beat sent before it
    /// are answered. Returns when it was sent and whether it went through
    /// the pool, if it is ours. Earlier heartbeats stay out until they come
    /// back themselves: a barrier on the listener's own connection often
    /// overtakes a heartbeat still waiting for a pooled connection, and
    /// only a heartbeat proves the pool's path (dropping it here made a
    /// flood of barriers look like a deaf listener).
    fn heard(&mut self, id: i64) -> Option<(i64, bool)> {
        let position = self.beats.iter().position(|beat| beat.id == id)?;
        let beat = self.beats.remove(position)?;
        let mut index = 0;
        self.beats.retain_mut(|other| {
            let sent_before = index < position;
            index += 1;
            if !sent_before {
                return true;
            }
            for barrier in other.barriers.drain(..) {
                let _ = barrier.send(());
            }
            other.proves_path
        });
        for barrier in beat.barriers {
            let _ = barrier.send(());
        }
        Some((beat.sent_ms, beat.proves_path))
    }

    /// Forgets beats out for longer than `limit` (lost with a pooled
    /// connection): their barriers fail, and can be asked again.
    fn expire(&mut self, limit: Duration) {
        let oldest = chrono::Utc::now().timestamp_millis() - limit.as_millis() as i64;
        while self.beats.front().is_some_and(|beat| beat.sent_ms < oldest) {
            self.beats.pop_front();
        }
    }
}

async fn listen_once(
    connector: &PgConnector,
    pool: &Database,
    heartbeat: &Heartbeat,
    handler: &mut (impl FnMut(ListenEvent) + Send),
    barriers: &mut mpsc::Receiver<BarrierRequest>,
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
    let client = std::sync::Arc::new(client);
    let (pool_path, listener_path) = (Via::Pool(pool.clone()), Via::Listener(client.clone()));
    // The connection object does the I/O; it must be polled for the client's
    // LISTEN to complete, and it yields the notifications.
    let (sender, mut received) = mpsc::unbounded_channel();
    let io = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    let heard = match notification.channel() {
                        KEY_ANNOUNCEMENT_CHANNEL => Heard::KeyAnnounced,
                        CHATBOT_CHANGES_CHANNEL => Heard::ChatbotsChanged,
                        _ => Heard::Invalidation,
                    };
                    let _ = sender.send(Ok((heard, notification.payload().to_owned())));
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
            .batch_execute(&format!(
                "LISTEN {INVALIDATION_CHANNEL}; LISTEN {KEY_ANNOUNCEMENT_CHANNEL}; \
                 LISTEN {CHATBOT_CHANGES_CHANNEL}"
            ))
            .await?;
        // Live once the first heartbeat comes back: only then is it known
        // that this LISTEN hears what the pool sends.
        // Since the LISTEN, or the last heartbeat heard; `warned` once per
        // stretch without one.
        let (mut live, mut warned) = (false, false);
        let mut last_heard = tokio::time::Instant::now();
        let mut beat = tokio::time::interval(HEARTBEAT_INTERVAL);
        let mut out = Outstanding::default();
        loop {
            tokio::select! {
                message = received.recv() => match message {
                    Some(Ok((Heard::KeyAnnounced, payload))) => {
                        handler(ListenEvent::KeyAnnounced(payload))
                    }
                    Some(Ok((Heard::ChatbotsChanged, _))) => handler(ListenEvent::ChatbotsChanged),
                    Some(Ok((Heard::Invalidation, payload))) => match Heartbeat::beat_id(&payload) {
                        Some(id) => {
                            // Another replica's beat, or one of ours.
                            let Some((sent_ms, proves_path)) = out.heard(id) else { continue };
                            if proves_path {
                                last_heard = tokio::time::Instant::now();
                            }
                            if proves_path && !live {
                                live = true;
                                handler(ListenEvent::Listening);
                                match std::mem::replace(&mut warned, false) {
                                    false => tracing::info!("listening for API key invalidations"),
                                    true => tracing::info!(
                                        "the invalidation listener hears its notifications again; caching again"
                                    ),
                                }
                            }
                            if live {
                                handler(ListenEvent::Synced(sent_ms));
                            }
                            if live && !out.waiting.is_empty() && !out.barrier_out() {
                                let waiting = std::mem::take(&mut out.waiting);
                                out.send(heartbeat, &listener_path, waiting);
                            }
                        }
                        None => handler(ListenEvent::Notification(payload)),
                    },
                    Some(Err(error)) => return Err(error.into()),
                    None => anyhow::bail!("the listener connection closed"),
                },
                Some(first) = barriers.recv() => {
                    out.waiting.push(first);
                    while let Ok(more) = barriers.try_recv() {
                        out.waiting.push(more);
                    }
                    // One barrier out at a time: those asked meanwhile share
                    // the next, sent when it comes back.
                    if live && !out.barrier_out() {
                        let waiting = std::mem::take(&mut out.waiting);
                        out.send(heartbeat, &listener_path, waiting);
                    }
                }
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
                    // A late beat still proves the path; one this late is lost.
                    out.expire(10 * HEARTBEAT_TIMEOUT);
                    // Barriers wait only while the listener hears; the
                    // ones waiting now ride on this beat.
                    let waiting = if live { std::mem::take(&mut out.waiting) } else {
                        out.waiting.clear();
                        Vec::new()
                    };
                    out.send(heartbeat, &pool_path, waiting);
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

    fn beat(id: i64, sent_ms: i64, proves_path: bool) -> (Beat, oneshot::Receiver<()>) {
        let (barrier, answered) = oneshot::channel();
        let beat = Beat {
            id,
            sent_ms,
            proves_path,
            barriers: vec![barrier],
        };
        (beat, answered)
    }

    #[test]
    fn a_barrier_heard_first_answers_earlier_barriers_but_leaves_a_heartbeat_out() {
        let mut out = Outstanding::default();
        let (heartbeat, heartbeat_barrier) = beat(1, 100, true);
        let (earlier_barrier, earlier_answered) = beat(2, 101, false);
        let (barrier, answered) = beat(3, 102, false);
        let (later, mut later_answered) = beat(4, 103, false);
        out.beats
            .extend([heartbeat, earlier_barrier, barrier, later]);

        // The barrier on the listener's connection overtakes the heartbeat
        // waiting for a pooled connection.
        assert_eq!(out.heard(3), Some((102, false)));
        for mut answered in [heartbeat_barrier, earlier_answered, answered] {
            assert_eq!(answered.try_recv(), Ok(()));
        }
        assert!(
            later_answered.try_recv().is_err(),
            "sent after: still waiting"
        );
        // The heartbeat, when it arrives, is still this listener's: it
        // proves the pool's path.
        assert_eq!(out.heard(1), Some((100, true)));
        assert_eq!(out.heard(2), None, "answered and forgotten");
        assert_eq!(out.beats.len(), 1);
    }

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
        assert_eq!(Heartbeat::beat_id("key:-7"), Some(7));
        assert_eq!(
            Heartbeat::beat_id(&Invalidation::Key(ApiKeyId(42)).payload()),
            None
        );
        assert_eq!(Invalidation::parse("key:x"), None);
    }
}
