//! Publishing every organization's events to NATS JetStream (`NATS_URL`).
//!
//! Each event goes to `<prefix>.<organization id>.<event type>` as the
//! protobuf encoding of `chatbot.v1.Event`, with the event's id as its
//! message id (`Nats-Msg-Id`): JetStream drops a copy published again
//! within its duplicate window. An organization's events are published one
//! at a time, each after the previous one's acknowledgement, so the stream
//! holds them in the organization's order; how far they got is the
//! organization's row of `organization_event_publications`, taken with
//! `FOR UPDATE SKIP LOCKED` for the page being published, so one replica at
//! a time publishes an organization's events and another takes over where
//! it stopped. An event is kept in the outbox until it is published.
//!
//! NATS down (no connection, no stream, no acknowledgement in
//! [`ACK_TIMEOUT`]) starts an outage: one WARN, `event_publisher_up` 0, a
//! retry every [`RETRY_INTERVAL`], and publishing resumes where it stopped
//! (one INFO). Requests never wait for any of it.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use diesel_async::scoped_futures::ScopedFutureExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prost::Message;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use crate::db::models::{EventPublication, OrganizationEvent};
use crate::db::{Database, DbConnection};
use crate::domain::OrganizationId;
use crate::proto;

/// How often a publisher with nothing to publish looks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long a publisher waits after a failure before it tries again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// How long connecting, creating the stream or an acknowledgement may take.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Organizations looked at per round.
const ORGANIZATIONS_PER_ROUND: i64 = 100;

/// Events published per organization before its row is released.
const PAGE: i64 = 100;

/// Where the events go: the settings' NATS_* values.
#[derive(Clone)]
pub struct NatsTarget {
    pub url: SecretString,
    pub ca_file: Option<PathBuf>,
    pub stream: String,
    pub subject_prefix: String,
}

/// The publisher's gauge and counters (see `crate::metrics`).
pub struct PublishMetrics {
    pub up: Gauge,
    pub published: Counter,
    pub failures: Counter,
}

/// What went wrong in a round.
enum Fault {
    /// NATS: the events wait in the outbox.
    Nats(String),
    /// The database: the next round tries again.
    Store(anyhow::Error),
}

impl From<diesel::result::Error> for Fault {
    fn from(error: diesel::result::Error) -> Self {
        Self::Store(error.into())
    }
}

/// How an organization's page went: events published, whether more wait,
/// and the NATS failure that stopped it early.
struct Page {
    published: u64,
    full: bool,
    failure: Option<String>,
}

/// The replica's publisher task.
pub struct NatsPublisher {
    db: Database,
    target: NatsTarget,
    metrics: PublishMetrics,
    jetstream: Option<jetstream::Context>,
    in_outage: bool,
}

impl NatsPublisher {
    pub fn new(db: Database, target: NatsTarget, metrics: PublishMetrics) -> Self {
        Self {
            db,
            target,
            metrics,
            jetstream: None,
            in_outage: false,
        }
    }

    /// Publishes until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let wait = match self.round().await {
                Ok(true) => Duration::ZERO,
                Ok(false) => POLL_INTERVAL,
                Err(Fault::Nats(reason)) => {
                    // Connected afresh next time: a new client, and the
                    // stream created again should it have been deleted.
                    self.jetstream = None;
                    self.start_outage(&reason);
                    RETRY_INTERVAL
                }
                Err(Fault::Store(error)) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "could not read the events to publish to NATS; will retry"
                    );
                    RETRY_INTERVAL
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One pass over the organizations with unpublished events; true if
    /// some have more waiting.
    async fn round(&mut self) -> Result<bool, Fault> {
        // Connected first, so an unreachable NATS is reported at start.
        let jetstream = self.connected().await?;
        let pending = {
            let mut conn = self
                .db
                .conn()
                .await
                .map_err(|error| Fault::Store(error.into()))?;
            EventPublication::pending(&mut conn, ORGANIZATIONS_PER_ROUND).await?
        };
        let mut more = false;
        for (organization, newest) in pending {
            let page = self.publish_page(&jetstream, organization, newest).await?;
            self.metrics.published.inc_by(page.published);
            if let Some(reason) = page.failure {
                return Err(Fault::Nats(reason));
            }
            more |= page.full;
        }
        self.end_outage();
        Ok(more)
    }

    /// The JetStream context, connecting (and creating the stream if it
    /// does not exist) the first time and after a failure to.
    async fn connected(&mut self) -> Result<jetstream::Context, Fault> {
        if let Some(jetstream) = &self.jetstream {
            return Ok(jetstream.clone());
        }
        let mut options = async_nats::ConnectOptions::new()
            .name("chatbot-backend")
            .connection_timeout(ACK_TIMEOUT)
            .request_timeout(Some(ACK_TIMEOUT));
        if let Some(ca_file) = &self.target.ca_file {
            options = options
                .add_root_certificates(ca_file.clone())
                .require_tls(true);
        }
        // The URL may hold credentials: only the error's kind is logged.
        let client = tokio::time::timeout(
            ACK_TIMEOUT,
            options.connect(self.target.url.expose_secret()),
        )
        .await
        .map_err(|_| Fault::Nats("connecting timed out".into()))?
        .map_err(|error| Fault::Nats(format!("connecting: {:?}", error.kind())))?;
        let jetstream = jetstream::new(client);
        let config = jetstream::stream::Config {
            name: self.target.stream.clone(),
            subjects: vec![format!("{}.>", self.target.subject_prefix)],
            ..Default::default()
        };
        tokio::time::timeout(ACK_TIMEOUT, jetstream.get_or_create_stream(config))
            .await
            .map_err(|_| Fault::Nats("creating the stream timed out".into()))?
            .map_err(|error| Fault::Nats(format!("creating the stream: {error}")))?;
        self.jetstream = Some(jetstream.clone());
        Ok(jetstream)
    }

    /// Publishes the organization's next page of events under its row's
    /// lock (PostgreSQL: in a transaction, skipped while another replica
    /// holds it), recording each acknowledged one; a NATS failure ends the
    /// page early and what was acknowledged stays recorded.
    async fn publish_page(
        &self,
        jetstream: &jetstream::Context,
        organization: OrganizationId,
        newest: i64,
    ) -> Result<Page, Fault> {
        let mut conn = self
            .db
            .conn()
            .await
            .map_err(|error| Fault::Store(error.into()))?;
        EventPublication::start(&mut conn, organization).await?;
        let target = &self.target;
        let page = match &mut conn {
            DbConnection::Postgres(_) => {
                conn.transaction(|conn| {
                    publish_locked(conn, jetstream, target, organization, newest).scope_boxed()
                })
                .await?
            }
            // One process, one publisher: nothing to lock against, and no
            // write transaction held open while NATS answers.
            DbConnection::Sqlite(_) => {
                publish_locked(&mut conn, jetstream, target, organization, newest).await?
            }
        };
        Ok(page)
    }

    fn start_outage(&mut self, reason: &str) {
        self.metrics.failures.inc();
        self.metrics.up.set(0);
        if !self.in_outage {
            self.in_outage = true;
            tracing::warn!(
                %reason,
                nats.stream = %self.target.stream,
                "could not publish events to NATS JetStream; they stay in the outbox and \
                 publishing resumes when NATS answers"
            );
        }
    }

    fn end_outage(&mut self) {
        self.metrics.up.set(1);
        if self.in_outage {
            self.in_outage = false;
            tracing::info!(nats.stream = %self.target.stream, "publishing events to NATS JetStream again");
        }
    }
}

/// The body of [`NatsPublisher::publish_page`], on a connection that holds
/// (or needs no) lock.
async fn publish_locked(
    conn: &mut DbConnection,
    jetstream: &jetstream::Context,
    target: &NatsTarget,
    organization: OrganizationId,
    newest: i64,
) -> diesel::QueryResult<Page> {
    let mut page = Page {
        published: 0,
        full: false,
        failure: None,
    };
    let Some(mut published) = EventPublication::claim(conn, organization).await? else {
        return Ok(page);
    };
    let events = OrganizationEvent::after(conn, organization, published, PAGE).await?;
    if events.is_empty() {
        // Everything up to `newest` committed and was purged before
        // publishing was turned on: nothing to wait for.
        if newest > published {
            EventPublication::advance(conn, organization, newest).await?;
        }
        return Ok(page);
    }
    page.full = events.len() as i64 == PAGE;
    for event in events {
        let sequence = event.sequence;
        if let Err(reason) = publish_one(jetstream, target, event).await {
            page.failure = Some(reason);
            break;
        }
        published = sequence;
        page.published += 1;
    }
    if page.published > 0 {
        EventPublication::advance(conn, organization, published).await?;
    }
    Ok(page)
}

/// Publishes one event and waits for the stream's acknowledgement.
async fn publish_one(
    jetstream: &jetstream::Context,
    target: &NatsTarget,
    event: OrganizationEvent,
) -> Result<(), String> {
    let subject = format!(
        "{}.{}.{}",
        target.subject_prefix, event.organization_id, event.event_type
    );
    let id = event.id.to_string();
    let payload = proto::Event::from(event).encode_to_vec();
    let message = PublishMessage::build()
        .payload(payload.into())
        .message_id(id)
        .expected_stream(&target.stream)
        .header(
            "Content-Type",
            "application/protobuf; proto=chatbot.v1.Event",
        );
    let acknowledged = async {
        jetstream
            .send_publish(subject, message)
            .await
            .map_err(|error| format!("publishing: {error}"))?
            .await
            .map_err(|error| format!("acknowledgement: {error}"))
    };
    tokio::time::timeout(ACK_TIMEOUT, acknowledged)
        .await
        .map_err(|_| "the acknowledgement timed out".to_owned())??;
    Ok(())
}
