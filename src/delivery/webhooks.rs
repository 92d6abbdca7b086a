//! Delivering every organization's events to its webhooks, as the Standard
//! Webhooks specification says: a POST of `{"type", "timestamp", "data"}`
//! (data: the `chatbot.v1.Event` in protobuf's JSON form, as grpcurl
//! prints it) with `webhook-id` (the event's id, the same on every
//! attempt), `webhook-timestamp` and `webhook-signature`.
//!
//! Each webhook receives its organization's events in order: its row says
//! how far it got, and the next event is attempted only once the one before
//! was delivered (or given up on). A replica takes a webhook with a lease
//! on its row ([`Webhook::claim_due`]), delivers its due events and gives
//! the lease back; no connection is held while an endpoint answers, and
//! at most [`CONCURRENT_WEBHOOKS`] endpoints are called at once per
//! replica, so a hanging endpoint slows nothing but its own deliveries.
//!
//! A failed attempt (no 2xx within the timeout) is tried again after the
//! base wait, four times longer each time (at most ten hours); after the
//! last attempt the delivery is failed, the webhook disabled, and a
//! `webhook.disable` event says so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;
use prost::Message;
use tokio::sync::{watch, Semaphore};

use crate::db::models::webhook::{delivery_state, DISABLED};
use crate::db::models::{
    Attempt, AuditActor, OrganizationEvent, Webhook, WebhookChanges, WebhookDelivery,
};
use crate::db::{Database, Written};
use crate::domain::{AuditAction, AuditRecord, AuditTarget, ReplicaId, WebhookSigner};
use crate::proto;
use crate::services::events::state_of;

/// How often a replica with nothing due looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Endpoints one replica calls at once.
pub const CONCURRENT_WEBHOOKS: usize = 16;

/// Events delivered to one webhook per lease, at most.
const EVENTS_PER_LEASE: usize = 50;

/// Room left in a lease for the attempt under way.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// The delivery settings (see WEBHOOK_* in `crate::config`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Endpoints may be private hosts: no check of what names resolve to.
    pub allow_private: bool,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub retry_base: Duration,
}

impl WebhookSettings {
    /// The wait after the `attempts`-th failed attempt.
    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 4u32.saturating_pow(attempts.saturating_sub(1));
        self.retry_base
            .saturating_mul(factor)
            .min(Duration::from_secs(10 * 3600))
    }

    /// How long a webhook's lease lasts: its attempts and a margin.
    fn lease(&self) -> Duration {
        self.timeout.saturating_mul(2) + LEASE_MARGIN
    }
}

/// The deliverer's counters (see `crate::metrics`).
pub struct DeliveryMetrics {
    pub delivered: prometheus_client::metrics::counter::Counter,
    pub failed_attempts: prometheus_client::metrics::counter::Counter,
    pub disabled: prometheus_client::metrics::counter::Counter,
}

/// Why an attempt failed: the endpoint's status (0: no answer) and what
/// went wrong, in words.
struct Failure {
    status: i32,
    error: String,
}

/// The replica's webhook delivery task.
pub struct WebhookDeliverer {
    db: Database,
    client: reqwest::Client,
    signer: WebhookSigner,
    settings: WebhookSettings,
    replica: ReplicaId,
    event_descriptor: prost_reflect::MessageDescriptor,
    metrics: DeliveryMetrics,
}

impl WebhookDeliverer {
    pub fn new(
        db: Database,
        signer: WebhookSigner,
        settings: WebhookSettings,
        metrics: DeliveryMetrics,
    ) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut client = reqwest::Client::builder();
        if !settings.allow_private {
            client = client.dns_resolver(Arc::new(PublicAddressesOnly));
        }
        let client = client
            .tls_backend_preconfigured(tls)
            .timeout(settings.timeout)
            // A redirect is an answer, not a delivery: no request goes
            // anywhere but the registered URL.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent("chatbot-backend-webhooks")
            .build()?;
        let pool = prost_reflect::DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET)?;
        let event_descriptor = pool
            .get_message_by_name("chatbot.v1.Event")
            .ok_or_else(|| anyhow::anyhow!("chatbot.v1.Event is not in the descriptor set"))?;
        Ok(Self {
            db,
            client,
            signer,
            settings,
            replica: ReplicaId::generate(),
            event_descriptor,
            metrics,
        })
    }

    /// Delivers until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(CONCURRENT_WEBHOOKS));
        loop {
            let free = slots.available_permits();
            let claimed = match free {
                0 => Ok(Vec::new()),
                free => this.claim(free).await,
            };
            let wait = match claimed {
                Ok(webhooks) if !webhooks.is_empty() => {
                    for webhook in webhooks {
                        let Ok(slot) = slots.clone().acquire_owned().await else {
                            return;
                        };
                        let this = this.clone();
                        tokio::spawn(async move {
                            this.deliver(webhook).await;
                            drop(slot);
                        });
                    }
                    Duration::ZERO
                }
                Ok(_) => POLL_INTERVAL,
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "could not look for webhook deliveries due; will retry"
                    );
                    POLL_INTERVAL * 4
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn claim(&self, limit: usize) -> anyhow::Result<Vec<Webhook>> {
        let mut conn = self.db.conn().await?;
        let now = Utc::now();
        let until = now + self.settings.lease();
        let limit = i64::try_from(limit).unwrap_or(1);
        Ok(Webhook::claim_due(&mut conn, self.replica, now, until, limit).await?)
    }

    /// Delivers what is due to one webhook under its lease, then gives the
    /// lease back. A store failure ends the turn: the lease runs out and
    /// the next turn (here or on another replica) goes on from the row.
    async fn deliver(&self, webhook: Webhook) {
        let id = webhook.id;
        if let Err(error) = self.deliver_due(webhook).await {
            tracing::warn!(
                webhook_id = %id,
                error = format!("{error:#}"),
                "could not record a webhook delivery; will retry"
            );
        }
        if let Ok(mut conn) = self.db.conn().await {
            let _ = Webhook::release(&mut conn, id, self.replica).await;
        }
    }

    async fn deliver_due(&self, webhook: Webhook) -> anyhow::Result<()> {
        let deadline =
            Instant::now() + self.settings.lease() - self.settings.timeout - LEASE_MARGIN / 2;
        let now = Utc::now();
        let redeliveries = {
            let mut conn = self.db.conn().await?;
            WebhookDelivery::due_redeliveries(&mut conn, webhook.id, now, 10).await?
        };
        for delivery in redeliveries {
            // Asked for by a person: one attempt, whatever it brings.
            let result = self.attempt(&webhook, delivery.event_sequence).await;
            let attempt = match result {
                Ok(status) => delivered(status),
                Err(failure) => failed(failure, None),
            };
            let mut conn = self.db.conn().await?;
            WebhookDelivery::record(&mut conn, delivery.id, &attempt).await?;
        }
        let due = webhook.retry_at.is_none_or(|at| at <= now);
        if !webhook.is_active() || !due {
            return Ok(());
        }
        let mut sequence = webhook.delivered_sequence;
        for _ in 0..EVENTS_PER_LEASE {
            if Instant::now() >= deadline {
                break;
            }
            let mut conn = self.db.conn().await?;
            let organization = webhook.organization_id;
            let Some(event) = OrganizationEvent::after(&mut conn, organization, sequence, 1)
                .await?
                .pop()
            else {
                break;
            };
            if !webhook.receives(&event.event_type) {
                sequence = event.sequence;
                Webhook::advance(&mut conn, webhook.id, sequence, None).await?;
                continue;
            }
            let delivery =
                match WebhookDelivery::in_order(&mut conn, webhook.id, event.sequence).await? {
                    Some(delivery) => delivery,
                    None => {
                        WebhookDelivery::start(
                            &mut conn,
                            webhook.id,
                            event.sequence,
                            event.id,
                            &event.event_type,
                            false,
                        )
                        .await?
                    }
                };
            drop(conn);
            let result = self.attempt_event(&webhook, event).await;
            let mut conn = self.db.conn().await?;
            let attempts = u32::try_from(delivery.attempts).unwrap_or(0) + 1;
            match result {
                Ok(status) => {
                    WebhookDelivery::record(&mut conn, delivery.id, &delivered(status)).await?;
                    sequence = delivery.event_sequence;
                    Webhook::advance(&mut conn, webhook.id, sequence, None).await?;
                }
                Err(failure) if attempts >= self.settings.max_attempts => {
                    let reason = format!(
                        "event {} was not delivered in {attempts} attempts; the last: {}",
                        delivery.event_id, failure.error
                    );
                    let attempt = failed(failure, None);
                    WebhookDelivery::record(&mut conn, delivery.id, &attempt).await?;
                    self.disable(&mut conn, &webhook, delivery.event_sequence, reason)
                        .await?;
                    return Ok(());
                }
                Err(failure) => {
                    let next = Utc::now() + self.settings.backoff(attempts);
                    let attempt = failed(failure, Some(next));
                    WebhookDelivery::record(&mut conn, delivery.id, &attempt).await?;
                    Webhook::retry_later(&mut conn, webhook.id, next).await?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Disables a webhook that kept failing, past the event it gave up on,
    /// with a `webhook.disable` event of its organization saying so.
    async fn disable(
        &self,
        conn: &mut crate::db::DbConnection,
        webhook: &Webhook,
        gave_up_on: i64,
        reason: String,
    ) -> anyhow::Result<()> {
        let id = webhook.id;
        let organization = webhook.organization_id;
        self.metrics.disabled.inc();
        tracing::warn!(
            webhook_id = %id,
            organization_id = %organization,
            %reason,
            "webhook disabled: its endpoint kept failing"
        );
        let actor = AuditActor {
            command: Some("webhook delivery".into()),
            ..AuditActor::default()
        };
        let changes = WebhookChanges {
            state: Some(DISABLED),
            disabled_reason: Some(reason),
            ..WebhookChanges::default()
        };
        let changes = &changes;
        crate::db::write_in(conn, Some(organization), actor, None, |conn| {
            async move {
                Webhook::advance(conn, id, gave_up_on, None).await?;
                let Some(webhook) = Webhook::update(conn, id, changes).await? else {
                    return Ok(Written::unrecorded(()));
                };
                let record = AuditRecord::new(
                    AuditAction::WebhookDisable,
                    AuditTarget::webhook(id, organization),
                )
                .with_changes(vec![crate::domain::AuditChange::values(
                    "state", "active", "disabled",
                )])
                .with_state(state_of(webhook));
                Ok::<_, diesel::result::Error>(Written::recorded((), record))
            }
            .scope_boxed()
        })
        .await?;
        Ok(())
    }

    /// One attempt of the organization's event `sequence` (a redelivery).
    async fn attempt(&self, webhook: &Webhook, sequence: i64) -> Result<i32, Failure> {
        let event = async {
            let mut conn = self.db.conn().await.ok()?;
            OrganizationEvent::after(&mut conn, webhook.organization_id, sequence - 1, 1)
                .await
                .ok()?
                .pop()
                .filter(|event| event.sequence == sequence)
        }
        .await;
        match event {
            Some(event) => self.attempt_event(webhook, event).await,
            None => Err(Failure {
                status: 0,
                error: "the event is no longer kept (past AUDIT_RETENTION_DAYS)".into(),
            }),
        }
    }

    /// POSTs the event, signed; the endpoint's status if it is 2xx.
    async fn attempt_event(
        &self,
        webhook: &Webhook,
        event: OrganizationEvent,
    ) -> Result<i32, Failure> {
        let message_id = event.id.to_string();
        let event_type = event.event_type.clone();
        let created_at = event.created_at;
        let body = self
            .body(&event_type, created_at, event)
            .map_err(|error| Failure {
                status: 0,
                error: format!("the event could not be encoded: {error}"),
            })?;
        let timestamp = Utc::now().timestamp();
        let secret = self.signer.secret(&webhook.id.0, &webhook.secret_salt);
        let signature = secret.signature(&message_id, timestamp, &body);
        let sent = self
            .client
            .post(&webhook.url)
            .header("content-type", "application/json")
            .header("webhook-id", &message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let answer = match sent {
            Ok(response) if response.status().is_success() => {
                Ok(i32::from(response.status().as_u16()))
            }
            Ok(response) => Err(Failure {
                status: i32::from(response.status().as_u16()),
                error: format!("the endpoint answered HTTP {}", response.status()),
            }),
            Err(error) => Err(Failure {
                status: 0,
                error: describe(&error),
            }),
        };
        match &answer {
            Ok(_) => self.metrics.delivered.inc(),
            Err(_) => self.metrics.failed_attempts.inc(),
        };
        answer
    }

    /// `{"type", "timestamp", "data"}`, data in protobuf's JSON form.
    fn body(
        &self,
        event_type: &str,
        created_at: DateTime<Utc>,
        event: OrganizationEvent,
    ) -> anyhow::Result<Vec<u8>> {
        let encoded = proto::Event::from(event).encode_to_vec();
        let dynamic = prost_reflect::DynamicMessage::decode(
            self.event_descriptor.clone(),
            encoded.as_slice(),
        )?;
        let body = serde_json::json!({
            "type": event_type,
            "timestamp": created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "data": dynamic,
        });
        Ok(serde_json::to_vec(&body)?)
    }
}

/// Resolves a name as the system does and keeps only the public
/// addresses: a URL whose name passed the public-host check at creation
/// cannot reach a private address at delivery (a name pointed at 10.0.0.1,
/// DNS rebinding). Addresses written in a URL were checked at creation.
struct PublicAddressesOnly;

impl reqwest::dns::Resolve for PublicAddressesOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let public: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| crate::domain::non_public_address_reason(address.ip()).is_none())
                .collect();
            if public.is_empty() {
                return Err("the name resolves to no public address".into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What went wrong, in words an owner can act on (never the URL: it may
/// hold a token of the receiver's).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "no answer within WEBHOOK_TIMEOUT_SECS".into()
    } else if error.is_connect() {
        "could not connect (refused, unreachable, TLS failed, or a name that resolves to no \
         public address)"
            .into()
    } else if error.is_redirect() {
        "the endpoint redirected; redirects are not followed".into()
    } else {
        "the request failed before an answer".into()
    }
}

fn delivered(status: i32) -> Attempt {
    Attempt {
        at: Utc::now(),
        state: delivery_state::DELIVERED,
        status_code: status,
        error: String::new(),
        next_attempt_at: None,
    }
}

fn failed(failure: Failure, next: Option<DateTime<Utc>>) -> Attempt {
    Attempt {
        at: Utc::now(),
        state: match next {
            Some(_) => delivery_state::PENDING,
            None => delivery_state::FAILED,
        },
        status_code: failure.status,
        error: failure.error,
        next_attempt_at: next,
    }
}

#[cfg(test)]
mod tests {
    use reqwest::dns::Resolve;

    use super::*;

    #[tokio::test]
    async fn a_name_that_resolves_only_to_loopback_is_not_connected_to() {
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let resolved = PublicAddressesOnly.resolve(name).await;
        assert!(resolved.is_err());
    }

    #[test]
    fn each_retry_waits_four_times_longer_up_to_ten_hours() {
        let settings = WebhookSettings {
            allow_private: false,
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            retry_base: Duration::from_secs(5),
        };
        let waits: Vec<u64> = (1..=9).map(|n| settings.backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 20, 80, 320, 1280, 5120, 20480, 36000, 36000]);
    }
}
