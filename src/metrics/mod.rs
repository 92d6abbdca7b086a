//! Prometheus metrics in the names go-grpc-prometheus made familiar
//! (grpc_server_started_total, grpc_server_handled_total,
//! grpc_server_handling_seconds), plus pool and health gauges, served as
//! Prometheus text on `METRICS_ADDR` at `/metrics`.
//!
//! Only the methods the server serves get their own labels, as
//! go-grpc-prometheus does; every other path a client invents counts under
//! one `unknown` set, so clients cannot grow the series without bound. The
//! served methods come from the descriptor sets of the registered services,
//! so a new RPC is labelled without a list to keep in step. The HTTP
//! endpoint that serves them is [`endpoint`].

mod endpoint;

pub use endpoint::serve;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use prost::Message as _;

use crate::db::Database;

/// Histogram bounds in seconds, as go-grpc-prometheus' defaults.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label every path that is not a served method gets.
const UNKNOWN: &str = "unknown";

/// gRPC code names as go-grpc-prometheus labels them, indexed by code.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The go-grpc-prometheus name of a gRPC code; codes outside the table are
/// `Unknown`, as gRPC treats them.
pub fn code_name(code: tonic::Code) -> &'static str {
    CODE_NAMES
        .get(usize::try_from(code as i32).unwrap_or(usize::MAX))
        .copied()
        .unwrap_or("Unknown")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Which bounded queue refused a call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: &'static str,
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS.iter().copied())
}

/// One method's series, created at start so that an RPC only looks its
/// method up in an immutable map and bumps atomics (and takes the
/// histogram's own short lock: prometheus-client's, per method).
struct MethodSeries {
    labels: MethodLabels,
    started: Counter,
    seconds: Histogram,
    /// Created on a code's first use, so the output lists only codes seen.
    handled: [OnceLock<Counter>; 17],
}

/// The series of one method, as the RPC layer holds them for a call.
#[derive(Clone)]
pub struct MethodHandle {
    metrics: Metrics,
    index: usize,
}

impl MethodHandle {
    fn series(&self) -> &MethodSeries {
        &self.metrics.inner.methods[self.index]
    }

    /// Whether this is a served method, not the series every unknown path
    /// shares.
    pub fn is_known(&self) -> bool {
        self.index + 1 < self.metrics.inner.methods.len()
    }

    pub fn started(&self) {
        self.series().started.inc();
    }

    pub fn handled(&self, code: tonic::Code, elapsed: Duration) {
        let series = self.series();
        let index = usize::try_from(code as i32)
            .ok()
            .filter(|i| *i < CODE_NAMES.len())
            .unwrap_or(tonic::Code::Unknown as usize);
        series.handled[index]
            .get_or_init(|| {
                self.metrics
                    .inner
                    .handled
                    .get_or_create_owned(&HandledLabels {
                        grpc_type: series.labels.grpc_type,
                        grpc_service: series.labels.grpc_service.clone(),
                        grpc_method: series.labels.grpc_method.clone(),
                        grpc_code: CODE_NAMES[index],
                    })
            })
            .inc();
        series.seconds.observe(elapsed.as_secs_f64());
    }
}

struct Inner {
    registry: Registry,
    /// Served methods, then the `unknown` set last.
    methods: Vec<MethodSeries>,
    by_path: HashMap<String, usize>,
    handled: Family<HandledLabels, Counter>,
    pool_connections: Family<StateLabel, Gauge>,
    pool_max: Gauge,
    pool_waiting: Gauge,
    serving: Gauge,
    rate_limit_fallbacks: Counter,
    rate_limit_store_up: Gauge,
    event_publisher_up: Gauge,
    events_published: Counter,
    event_publish_failures: Counter,
    webhook_deliveries: Counter,
    webhook_attempt_failures: Counter,
    webhooks_disabled: Counter,
    overload_refusals: Family<QueueLabel, Counter>,
    cache_lookups: Family<CacheLookupLabels, Counter>,
    invalidations_live: Gauge,
    pool_acquire_seconds: Histogram,
    pool_acquire_timeouts: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLookupLabels {
    cache: &'static str,
    result: &'static str,
}

/// The registry shared by the RPC layer and the exporter.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

/// Every method of every service in `descriptor_sets` (encoded
/// `FileDescriptorSet`s), as (`/package.Service/Method`, service, method,
/// grpc_type).
fn served_methods(
    descriptor_sets: &[&[u8]],
) -> anyhow::Result<Vec<(String, String, String, &'static str)>> {
    let mut methods = Vec::new();
    for encoded in descriptor_sets {
        let set = prost_types::FileDescriptorSet::decode(*encoded)
            .context("decoding a descriptor set")?;
        for file in set.file {
            for service in &file.service {
                let service_name = match file.package() {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                for method in &service.method {
                    let grpc_type = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => "unary",
                        (true, false) => "client_stream",
                        (false, true) => "server_stream",
                        (true, true) => "bidi_stream",
                    };
                    methods.push((
                        format!("/{service_name}/{}", method.name()),
                        service_name.clone(),
                        method.name().to_owned(),
                        grpc_type,
                    ));
                }
            }
        }
    }
    Ok(methods)
}

impl Metrics {
    /// A registry labelling the methods of the services described by
    /// `descriptor_sets` (the encoded `FileDescriptorSet`s of every service
    /// the server serves).
    pub fn new(descriptor_sets: &[&[u8]]) -> anyhow::Result<Self> {
        let started: Family<MethodLabels, Counter> = Family::default();
        let handled: Family<HandledLabels, Counter> = Family::default();
        let seconds: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let mut by_path = HashMap::new();
        let mut methods = Vec::new();
        let unknown = (
            String::new(),
            UNKNOWN.to_owned(),
            UNKNOWN.to_owned(),
            UNKNOWN,
        );
        for (path, service, method, grpc_type) in served_methods(descriptor_sets)?
            .into_iter()
            .chain([unknown])
        {
            let labels = MethodLabels {
                grpc_type,
                grpc_service: service,
                grpc_method: method,
            };
            if !path.is_empty() {
                by_path.insert(path, methods.len());
            }
            methods.push(MethodSeries {
                started: started.get_or_create_owned(&labels),
                seconds: seconds.get_or_create_owned(&labels),
                handled: Default::default(),
                labels,
            });
        }

        let mut registry = Registry::default();
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            started,
        );
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            seconds,
        );
        let pool_connections = Family::<StateLabel, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database connections by state.",
            pool_connections.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "db_pool_max_connections",
            "Configured pool size.",
            pool_max.clone(),
        );
        let pool_waiting = Gauge::default();
        registry.register(
            "db_pool_waiting",
            "Requests waiting for a connection.",
            pool_waiting.clone(),
        );
        let serving = Gauge::default();
        registry.register(
            "health_serving",
            "1 while the server reports SERVING (database reachable).",
            serving.clone(),
        );
        let rate_limit_fallbacks = Counter::default();
        registry.register(
            "rate_limit_store_fallbacks",
            "Rate-limit checks counted in process because Redis did not answer.",
            rate_limit_fallbacks.clone(),
        );
        let rate_limit_store_up = Gauge::default();
        registry.register(
            "rate_limit_store_up",
            "1 while rate-limit checks go to Redis; 0 during an outage (counted in process) \
             and without REDIS_URL.",
            rate_limit_store_up.clone(),
        );
        let event_publisher_up = Gauge::default();
        registry.register(
            "event_publisher_up",
            "1 while events are published to NATS JetStream; 0 during an outage (the outbox \
             keeps them) and without NATS_URL.",
            event_publisher_up.clone(),
        );
        let events_published = Counter::default();
        registry.register(
            "events_published",
            "Events this replica published to NATS JetStream (acknowledged by the stream).",
            events_published.clone(),
        );
        let event_publish_failures = Counter::default();
        registry.register(
            "event_publish_failures",
            "Attempts to publish to NATS JetStream that failed (connection, stream or \
             acknowledgement); the events are published again.",
            event_publish_failures.clone(),
        );
        let webhook_deliveries = Counter::default();
        registry.register(
            "webhook_deliveries",
            "Webhook attempts this replica made that the endpoint answered with a 2xx.",
            webhook_deliveries.clone(),
        );
        let webhook_attempt_failures = Counter::default();
        registry.register(
            "webhook_attempt_failures",
            "Webhook attempts that got no 2xx in time (each is tried again, until the webhook's \
             last attempt).",
            webhook_attempt_failures.clone(),
        );
        let webhooks_disabled = Counter::default();
        registry.register(
            "webhooks_disabled",
            "Webhooks this replica disabled because an event could not be delivered in \
             WEBHOOK_MAX_ATTEMPTS attempts.",
            webhooks_disabled.clone(),
        );
        let overload_refusals = Family::<QueueLabel, Counter>::default();
        registry.register(
            "overload_refusals",
            "Calls answered RESOURCE_EXHAUSTED because a bounded queue was full, by queue \
             (password_hash, chatbot_reads, credit_spends), and WatchEvents streams refused \
             past MAX_EVENT_STREAMS (event_streams).",
            overload_refusals.clone(),
        );
        let cache_lookups = Family::<CacheLookupLabels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Cache lookups by cache (api_keys, chatbots, chatbot_pages, sessions, \
             memberships, service_accounts) and result (hit, miss); a bypassed cache misses.",
            cache_lookups.clone(),
        );
        let invalidations_live = Gauge::default();
        registry.register(
            "cache_invalidations_live",
            "1 while the caches hear of every change (PostgreSQL: the LISTEN connection \
             receives its own heartbeat; SQLite: always); 0 while they are bypassed.",
            invalidations_live.clone(),
        );
        let pool_acquire_seconds = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]);
        registry.register(
            "db_pool_acquire_seconds",
            "Time waiting for a pooled database connection.",
            pool_acquire_seconds.clone(),
        );
        let pool_acquire_timeouts = Counter::default();
        registry.register(
            "db_pool_acquire_timeouts",
            "Waits for a pooled connection that timed out or failed to connect (answered \
             UNAVAILABLE).",
            pool_acquire_timeouts.clone(),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                cache_lookups,
                invalidations_live,
                pool_acquire_seconds,
                pool_acquire_timeouts,
                registry,
                rate_limit_fallbacks,
                rate_limit_store_up,
                event_publisher_up,
                events_published,
                event_publish_failures,
                webhook_deliveries,
                webhook_attempt_failures,
                webhooks_disabled,
                overload_refusals,
                methods,
                by_path,
                handled,
                pool_connections,
                pool_max,
                pool_waiting,
                serving,
            }),
        })
    }

    /// Counts rate-limit checks that fell back from Redis.
    pub fn rate_limit_fallbacks(&self) -> Counter {
        self.inner.rate_limit_fallbacks.clone()
    }

    /// Says whether rate-limit checks go to Redis.
    pub fn rate_limit_store_up(&self) -> Gauge {
        self.inner.rate_limit_store_up.clone()
    }

    /// The webhook deliverer's counters: delivered, failed attempts,
    /// webhooks disabled.
    pub fn webhook_delivery(&self) -> (Counter, Counter, Counter) {
        (
            self.inner.webhook_deliveries.clone(),
            self.inner.webhook_attempt_failures.clone(),
            self.inner.webhooks_disabled.clone(),
        )
    }

    /// The NATS publisher's gauge and counters: up, published, failures.
    pub fn event_publishing(&self) -> (Gauge, Counter, Counter) {
        (
            self.inner.event_publisher_up.clone(),
            self.inner.events_published.clone(),
            self.inner.event_publish_failures.clone(),
        )
    }

    /// Counts calls refused because the queue named `queue` was full.
    pub fn overload_refusals(&self, queue: &'static str) -> Counter {
        self.inner
            .overload_refusals
            .get_or_create(&QueueLabel { queue })
            .clone()
    }

    /// Counts lookups of the cache named `cache` by result: (hits, misses).
    pub fn cache_lookups(&self, cache: &'static str) -> (Counter, Counter) {
        let family = &self.inner.cache_lookups;
        let result = |result| {
            family
                .get_or_create(&CacheLookupLabels { cache, result })
                .clone()
        };
        (result("hit"), result("miss"))
    }

    /// The gauge saying whether the caches hear every change.
    pub fn invalidations_live(&self) -> Gauge {
        self.inner.invalidations_live.clone()
    }

    /// Observes waits for a pooled connection, and counts the failed ones.
    pub fn pool_acquires(&self) -> (Histogram, Counter) {
        (
            self.inner.pool_acquire_seconds.clone(),
            self.inner.pool_acquire_timeouts.clone(),
        )
    }

    /// The series of the method at `path`, or the `unknown` set.
    pub fn method(&self, path: &str) -> MethodHandle {
        let index = self
            .inner
            .by_path
            .get(path)
            .copied()
            .unwrap_or(self.inner.methods.len() - 1);
        MethodHandle {
            metrics: self.clone(),
            index,
        }
    }

    pub fn set_serving(&self, serving: bool) {
        self.inner.serving.set(i64::from(serving));
    }

    /// The Prometheus text exposition, with the pool gauges read now.
    pub fn render(&self, db: &Database) -> String {
        let pool = db.pool_status();
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let connections = &self.inner.pool_connections;
        connections
            .get_or_create(&StateLabel { state: "open" })
            .set(gauge(pool.size));
        connections
            .get_or_create(&StateLabel { state: "in_use" })
            .set(gauge(pool.size.saturating_sub(pool.available)));
        connections
            .get_or_create(&StateLabel { state: "idle" })
            .set(gauge(pool.available));
        self.inner.pool_max.set(gauge(pool.max_size));
        self.inner.pool_waiting.set(gauge(pool.waiting));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.inner.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_methods_come_from_the_descriptors_with_their_streaming_type() {
        let methods = served_methods(&[
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ])
        .unwrap();
        let find = |path: &str| {
            methods
                .iter()
                .find(|(p, ..)| p == path)
                .map(|(_, service, method, kind)| (service.as_str(), method.as_str(), *kind))
        };
        assert_eq!(
            find("/chatbot.v1.ApiKeyService/VerifyApiKey"),
            Some(("chatbot.v1.ApiKeyService", "VerifyApiKey", "unary"))
        );
        assert_eq!(
            find("/grpc.health.v1.Health/Watch"),
            Some(("grpc.health.v1.Health", "Watch", "server_stream"))
        );
        assert_eq!(find("/chatbot.v1.ApiKeyService/Invented"), None);
    }

    #[test]
    fn codes_are_named_as_go_grpc_prometheus_names_them() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::Cancelled), "Canceled");
        assert_eq!(code_name(tonic::Code::Unauthenticated), "Unauthenticated");
    }
}
