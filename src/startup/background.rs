//! What a serving process does beside answering RPCs: readiness that follows
//! the database, last-used and usage flushes, reservation expiry, lifecycle
//! notices, retention purges, NATS publishing, webhook delivery and (on
//! PostgreSQL) LISTEN for other replicas' changes. Started together, told
//! to stop together, and awaited before the final flushes.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;

use crate::config::Settings;
use crate::db::{self, BarrierRequest, Database, DatabaseTarget};
use crate::health::HealthReporter;
use crate::hot_path::KnownKeys;
use crate::metrics::Metrics;
use crate::services::AppState;

use super::READINESS_SERVICES;

/// The background tasks of one server, and the signal that stops them.
pub(super) struct BackgroundTasks {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl BackgroundTasks {
    pub(super) fn start(
        state: &Arc<AppState>,
        settings: &Settings,
        database: DatabaseTarget,
        metrics: &Metrics,
        health_reporter: &HealthReporter,
        known_keys: Arc<KnownKeys>,
        barrier_requests: mpsc::Receiver<BarrierRequest>,
    ) -> anyhow::Result<Self> {
        let (stop_background, background_stopped) = watch::channel(false);
        let health_task = tokio::spawn(watch_database_health(
            state.db.clone(),
            health_reporter.clone(),
            metrics.clone(),
            Duration::from_secs(settings.health_check_interval_secs),
            background_stopped.clone(),
        ));
        let flush_task = tokio::spawn(flush_last_used_periodically(
            state.clone(),
            Duration::from_secs(settings.last_used_flush_interval_secs),
            background_stopped.clone(),
        ));
        let usage_task = tokio::spawn(every(
            Duration::from_secs(settings.usage_flush_interval_secs),
            background_stopped.clone(),
            {
                let state = state.clone();
                move || {
                    let state = state.clone();
                    async move {
                        if let Err(error) = state.verifier.usage().flush(&state.db).await {
                            tracing::warn!(
                                error = format!("{error:#}"),
                                "could not flush usage counts; will retry"
                            );
                        }
                    }
                }
            },
        ));
        // Reservations expire on every replica: the sweep is one indexed
        // query when nothing is due, and runs often enough that an expired
        // reservation is charged within a tenth of its time (at most 30 s).
        let expiry_task = tokio::spawn(every(
            Duration::from_secs((settings.reservation_ttl_secs / 10).clamp(1, 30)),
            background_stopped.clone(),
            {
                let state = state.clone();
                move || {
                    let state = state.clone();
                    async move {
                        let usage = state.verifier.usage();
                        if let Err(error) =
                            crate::services::api_keys::expire_due_reservations(&state.db, usage)
                                .await
                        {
                            tracing::warn!(
                                error = format!("{error:#}"),
                                "could not expire credit reservations; will retry"
                            );
                        }
                    }
                }
            },
        ));
        // Lifecycle events too: a sweep on every replica, off the request
        // path (the rows' locks keep each event single).
        let lifecycle_task = tokio::spawn(every(
            Duration::from_secs(settings.lifecycle_events_interval_secs),
            background_stopped.clone(),
            {
                let db = state.db.clone();
                let notice = chrono::TimeDelta::hours(
                    i64::try_from(settings.key_expiry_notice_hours).unwrap_or(0),
                );
                move || {
                    let db = db.clone();
                    async move {
                        if let Err(error) =
                            crate::services::lifecycle_events::record_due(&db, notice).await
                        {
                            tracing::warn!(
                                error = format!("{error:#}"),
                                "could not record lifecycle events; will retry"
                            );
                        }
                    }
                }
            },
        ));
        let days = |days: u64| chrono::TimeDelta::days(i64::try_from(days).unwrap_or(i64::MAX));
        let retention = db::retention::Retention {
            audit_events: days(settings.audit_retention_days),
            ended_sessions: days(settings.session_retention_days),
            usage: days(settings.usage_retention_days),
            keep_unpublished_events: settings.nats_url.is_some(),
        };
        let purge_task = tokio::spawn({
            let db = state.db.clone();
            let stop = background_stopped.clone();
            async move {
                db::retention::purge_expired(&db, &retention).await;
                every(PURGE_INTERVAL, stop, move || {
                    let db = db.clone();
                    async move { db::retention::purge_expired(&db, &retention).await }
                })
                .await;
            }
        });
        // Events leave the outbox for NATS in the background, never on a
        // request's path.
        let publish_task = match &settings.nats_url {
            Some(url) => {
                let (up, published, failures) = metrics.event_publishing();
                let target = crate::delivery::nats::NatsTarget {
                    url: url.clone(),
                    ca_file: settings.nats_ca_file.clone(),
                    stream: settings.nats_stream.clone(),
                    subject_prefix: settings.nats_subject_prefix.clone(),
                };
                let metrics = crate::delivery::nats::PublishMetrics {
                    up,
                    published,
                    failures,
                };
                let publisher =
                    crate::delivery::nats::NatsPublisher::new(state.db.clone(), target, metrics);
                tokio::spawn(publisher.run(background_stopped.clone()))
            }
            None => tokio::spawn(async {}),
        };
        // Webhooks too, with their signing secrets' key.
        let webhook_task = match &state.webhook_signer {
            Some(signer) => {
                let settings = crate::delivery::webhooks::WebhookSettings {
                    allow_private: settings.webhook_allow_private_targets,
                    timeout: Duration::from_secs(settings.webhook_timeout_secs),
                    max_attempts: settings.webhook_max_attempts,
                    retry_base: Duration::from_millis(settings.webhook_retry_base_millis),
                };
                let (delivered, failed_attempts, disabled) = metrics.webhook_delivery();
                let deliverer = crate::delivery::webhooks::WebhookDeliverer::new(
                    state.db.clone(),
                    signer.clone(),
                    settings,
                    crate::delivery::webhooks::DeliveryMetrics {
                        delivered,
                        failed_attempts,
                        disabled,
                    },
                )?;
                tokio::spawn(deliverer.run(background_stopped.clone()))
            }
            None => tokio::spawn(async {}),
        };
        let listen_task = match database {
            // Other replicas' changes arrive as notifications; the caches
            // serve only while they can.
            DatabaseTarget::Postgres(url) => {
                let caches = state.caches.clone();
                tokio::spawn(known_keys.keep_loaded(state.db.clone(), background_stopped.clone()));
                // Checked when the settings were validated.
                let connector = match &settings.database_listen_url {
                    Some(listen_url) => {
                        db::PgConnector::new(listen_url.expose_secret(), "DATABASE_LISTEN_URL")
                    }
                    None => db::PgConnector::new(&url, "DATABASE_URL"),
                }?;
                tokio::spawn(db::listen_for_invalidations(
                    connector,
                    state.db.clone(),
                    move |event| caches.follow(event),
                    barrier_requests,
                    background_stopped,
                ))
            }
            // One process per SQLite file: every change is made here.
            DatabaseTarget::Sqlite(_) => {
                state.caches.activate();
                tokio::spawn(async {})
            }
        };

        Ok(Self {
            stop: stop_background,
            tasks: vec![
                health_task,
                flush_task,
                expiry_task,
                lifecycle_task,
                usage_task,
                purge_task,
                publish_task,
                webhook_task,
                listen_task,
            ],
        })
    }

    /// Tells every task to stop and waits for each to finish.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

pub(super) async fn set_readiness(reporter: &HealthReporter, status: ServingStatus) {
    for service in READINESS_SERVICES {
        reporter.set_service_status(*service, status).await;
    }
}

/// Readiness follows the database: NOT_SERVING while it does not answer,
/// SERVING again by itself when it does.
async fn watch_database_health(
    db: Database,
    reporter: HealthReporter,
    metrics: Metrics,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut healthy = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let probe = async {
            let mut conn = db.conn().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            db::ping(&mut conn).await.map_err(anyhow::Error::from)
        };
        let ok = matches!(
            tokio::time::timeout(interval.min(Duration::from_secs(2)), probe).await,
            Ok(Ok(_))
        );
        if ok != healthy {
            healthy = ok;
            metrics.set_serving(ok);
            if ok {
                tracing::info!("database reachable again: SERVING");
                set_readiness(&reporter, ServingStatus::Serving).await;
            } else {
                tracing::warn!("database unreachable: NOT_SERVING");
                set_readiness(&reporter, ServingStatus::NotServing).await;
            }
        }
    }
}

/// How often expired rows are purged (`db::retention`).
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Runs `work` every `interval` until `stop` changes.
async fn every<F, Fut>(interval: Duration, mut stop: watch::Receiver<bool>, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        work().await;
    }
}

async fn flush_last_used_periodically(
    state: Arc<AppState>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        state.rate_limits.sweep();
        if let Err(error) = state.throttle.purge_ended().await {
            tracing::warn!(
                error = format!("{error:#}"),
                "could not purge ended login throttle windows; will retry"
            );
        }
        if let Err(error) = state.verifier.last_used().flush(&state.db).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "could not flush last-used times; will retry"
            );
        }
    }
}
