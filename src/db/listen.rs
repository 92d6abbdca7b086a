//! PostgreSQL LISTEN/NOTIFY: how replicas tell each other that cached
//! API-key rows went stale, through the database they already share.

use std::future::poll_fn;
use std::str::FromStr;
use std::time::Duration;

use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use super::DbConnection;
use crate::domain::{ApiKeyId, ChatbotId, SessionId, UserId};

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
}

impl Invalidation {
    /// The `NOTIFY` payload: `key:<id>`, `chatbot:<uuid>`, `user:<uuid>` or
    /// `session:<uuid>`.
    pub fn payload(&self) -> String {
        match self {
            Self::Key(id) => format!("key:{id}"),
            Self::Chatbot(id) => format!("chatbot:{id}"),
            Self::Owner(id) => format!("user:{id}"),
            Self::Session(id) => format!("session:{id}"),
        }
    }

    pub fn parse(payload: &str) -> Option<Self> {
        let (kind, id) = payload.split_once(':')?;
        match kind {
            "key" => id.parse().ok().map(Self::Key),
            "chatbot" => id.parse().ok().map(Self::Chatbot),
            "user" => id.parse().ok().map(Self::Owner),
            "session" => id.parse().ok().map(Self::Session),
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

/// Listens on [`INVALIDATION_CHANNEL`] over a dedicated connection until
/// `stop` fires, reconnecting with backoff after a failure.
pub async fn listen_for_invalidations(
    url: String,
    mut handler: impl FnMut(ListenEvent) + Send,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&url, &mut handler, &mut stop).await {
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

async fn listen_once(
    url: &str,
    handler: &mut (impl FnMut(ListenEvent) + Send),
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut config = tokio_postgres::Config::from_str(url)?;
    // Notice a silently dead peer in seconds rather than hours.
    config
        .connect_timeout(Duration::from_secs(5))
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3);
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
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
        handler(ListenEvent::Listening);
        tracing::info!("listening for API key invalidations");
        loop {
            tokio::select! {
                message = received.recv() => match message {
                    Some(Ok(payload)) => handler(ListenEvent::Notification(payload)),
                    Some(Err(error)) => return Err(error.into()),
                    None => anyhow::bail!("the listener connection closed"),
                },
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
        assert_eq!(Invalidation::parse("key:x"), None);
    }
}
