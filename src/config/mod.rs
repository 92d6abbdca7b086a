//! One `Settings` struct, filled from flags, environment variables and a
//! `.env` file (flags win), and validated once, before anything starts, into
//! the [`Config`] the rest of the server reads. Secrets (`SECRET_KEY`,
//! `SECRET_KEY_PREVIOUS`, the password in `DATABASE_URL`) are held in
//! `secrecy` types, so `Debug` of either prints none of them.

mod console_addresses;
mod validation;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::SecretString;

use crate::db::DatabaseTarget;

pub use console_addresses::{ConsoleAddr, ConsoleOrigins};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// A header name, lower case as Envoy sends them. Not `authorization`,
/// whose bearer keys are read anyway and whose other tokens belong to the
/// upstream.
fn parse_header_name(name: &str) -> Result<http::HeaderName, String> {
    let header = http::HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("{name:?} is not an HTTP header name"))?;
    if header == http::header::AUTHORIZATION {
        return Err("authorization is read anyway (`Bearer cbk_...`); name a header of its own, such as x-api-key".into());
    }
    Ok(header)
}

/// Each argon2 hash keeps a core busy for tens of milliseconds and holds
/// 19 MiB: a Login flood may take at most half the machine.
fn half_the_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Everything the server can be told. Every field has a flag and an
/// environment variable; docs/configuration.md lists them all.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Where data lives: a `postgres://` URL selects PostgreSQL; a
    /// `sqlite://PATH` URL or a bare file path selects the embedded SQLite
    /// store, created and migrated on first start.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://chatbot-backend.db",
        hide_env_values = true
    )]
    pub database_url: SecretString,

    /// Where the PostgreSQL listener for other replicas' changes connects,
    /// if not `DATABASE_URL`: LISTEN needs a session of its own, so behind
    /// a pooler in transaction mode (PgBouncer's default) point this at
    /// PostgreSQL itself or a session-mode pool.
    #[arg(long, env = "DATABASE_LISTEN_URL", hide_env_values = true)]
    pub database_listen_url: Option<SecretString>,

    /// Address to serve gRPC on; port 0 picks a free port (logged).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:50051")]
    pub listen_addr: SocketAddr,

    /// Maximum number of pooled database connections.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,

    /// Milliseconds a request waits for a pooled connection before UNAVAILABLE.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 2000)]
    pub database_acquire_timeout_ms: u64,

    /// Milliseconds opening a database connection may take.
    #[arg(long, env = "DATABASE_CONNECT_TIMEOUT_MS", default_value_t = 3000)]
    pub database_connect_timeout_ms: u64,

    /// Milliseconds a single SQL statement may run (PostgreSQL statement_timeout).
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_MS", default_value_t = 5000)]
    pub database_statement_timeout_ms: u64,

    /// Apply pending migrations when `serve` starts.
    #[arg(long, env = "MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,

    /// Allow llm_endpoint_url to point at loopback/private addresses
    /// (a local LLM server in development).
    #[arg(long, env = "ALLOW_PRIVATE_LLM_ENDPOINTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_private_llm_endpoints: bool,

    /// HS256 signing key for access tokens, at least 32 bytes. Unset: a random
    /// key per process (tokens die with it).
    #[arg(long, env = "SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<SecretString>,

    /// Previous signing key: still verifies tokens, never signs (rotation).
    #[arg(long, env = "SECRET_KEY_PREVIOUS", hide_env_values = true)]
    pub secret_key_previous: Option<SecretString>,

    /// Access token lifetime in seconds.
    #[arg(long, env = "ACCESS_TOKEN_TTL_SECS", default_value_t = 15 * 60)]
    pub access_token_ttl_secs: u64,

    /// Refresh token lifetime in seconds.
    #[arg(long, env = "REFRESH_TOKEN_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub refresh_token_ttl_secs: u64,

    /// Whether anyone may sign up with CreateUser; false makes it admin-only.
    #[arg(long, env = "ALLOW_SIGNUP", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_signup: bool,

    /// Failed logins per email within the throttle window before RESOURCE_EXHAUSTED.
    #[arg(long, env = "LOGIN_MAX_FAILURES_PER_EMAIL", default_value_t = 5)]
    pub login_max_failures_per_email: u32,

    /// Failed logins per client address within the throttle window.
    #[arg(long, env = "LOGIN_MAX_FAILURES_PER_ADDRESS", default_value_t = 20)]
    pub login_max_failures_per_address: u32,

    /// Length of the login throttle window in seconds.
    #[arg(long, env = "LOGIN_THROTTLE_WINDOW_SECS", default_value_t = 15 * 60)]
    pub login_throttle_window_secs: u64,

    /// Threads running argon2 hashes, at lower priority; more hashes wait,
    /// so logins cannot starve cheap RPCs. Default: half the CPU cores, at
    /// least 1.
    #[arg(long, env = "MAX_CONCURRENT_HASHES", default_value_t = half_the_cores())]
    pub max_concurrent_hashes: usize,

    /// Password hashes that may wait for a hashing thread; Login, CreateUser
    /// and UpdateUser calls beyond it are refused at once
    /// (RESOURCE_EXHAUSTED with a retry time).
    #[arg(long, env = "MAX_QUEUED_HASHES", default_value_t = 64)]
    pub max_queued_hashes: usize,

    /// While hashes wait, the percent of the time each hashing thread
    /// hashes; it rests the remainder, leaving the CPU to the cheap RPCs and
    /// to a PostgreSQL on the same host (100: never rests).
    #[arg(long, env = "PASSWORD_HASH_DUTY_PERCENT", default_value_t = 50)]
    pub password_hash_duty_percent: u32,

    /// Maximum active (not revoked, not expired) API keys per chatbot.
    #[arg(long, env = "MAX_ACTIVE_API_KEYS_PER_CHATBOT", default_value_t = 100)]
    pub max_active_api_keys_per_chatbot: i64,

    /// The request header Envoy's external authorization Check reads a
    /// client's API key from (an `authorization: Bearer cbk_...` entry is
    /// read too). It is removed before the request reaches the upstream.
    #[arg(
        long,
        env = "EXT_AUTHZ_API_KEY_HEADER",
        default_value = "x-api-key",
        value_parser = parse_header_name
    )]
    pub ext_authz_api_key_header: http::HeaderName,

    /// Most VerifyApiKey lookups held in the in-process cache; 0 turns the
    /// cache off.
    #[arg(long, env = "API_KEY_CACHE_CAPACITY", default_value_t = 10_000)]
    pub api_key_cache_capacity: usize,

    /// Seconds a cached VerifyApiKey lookup may be served. Changes reach
    /// every replica's cache at once (PostgreSQL LISTEN/NOTIFY); this bounds
    /// the damage of a missed notification. 0 turns the cache off.
    #[arg(long, env = "API_KEY_CACHE_TTL_SECS", default_value_t = 10)]
    pub api_key_cache_ttl_secs: u64,

    /// Most chatbots held in GetChatbot's in-process cache (invalidated on
    /// every replica like the VerifyApiKey cache; entries live at most
    /// API_KEY_CACHE_TTL_SECS); 0 turns the cache off.
    #[arg(long, env = "CHATBOT_CACHE_CAPACITY", default_value_t = 10_000)]
    pub chatbot_cache_capacity: usize,

    /// Most ListChatbots pages held in memory, as encoded answers of at
    /// most 64 KiB each (PostgreSQL only; every chatbot or membership
    /// change on any replica empties it; entries live at most
    /// API_KEY_CACHE_TTL_SECS); 0 turns the cache off.
    #[arg(long, env = "CHATBOT_PAGE_CACHE_CAPACITY", default_value_t = 256)]
    pub chatbot_page_cache_capacity: usize,

    /// Batches of coalesced chatbot reads (GetChatbot) at the database at
    /// once; reads arriving meanwhile wait to go out together in the next.
    #[arg(long, env = "READ_BATCHES_IN_FLIGHT", default_value_t = 2)]
    pub read_batches_in_flight: usize,

    /// Batches of credit spends (VerifyApiKey on keys with credits) at the
    /// database at once; spends arriving meanwhile wait to go out together
    /// in the next. One by default: a batch is usually one statement, and
    /// two at once over shared keys would make each other write again.
    #[arg(long, env = "SPEND_BATCHES_IN_FLIGHT", default_value_t = 1)]
    pub spend_batches_in_flight: usize,

    /// Items that may wait in each batch queue (GetChatbot's reads,
    /// VerifyApiKey's credit spends); calls beyond it are refused at once
    /// (RESOURCE_EXHAUSTED with a retry time).
    #[arg(long, env = "MAX_QUEUED_BATCH_ITEMS", default_value_t = 10_000)]
    pub max_queued_batch_items: usize,

    /// Seconds between flushes of API keys' last-used times.
    #[arg(long, env = "LAST_USED_FLUSH_INTERVAL_SECS", default_value_t = 30)]
    pub last_used_flush_interval_secs: u64,

    /// Seconds between flushes of usage counts (VerifyApiKey's answers per
    /// key and hour); a replica killed without shutting down loses at most
    /// this long's counts.
    #[arg(long, env = "USAGE_FLUSH_INTERVAL_SECS", default_value_t = 30)]
    pub usage_flush_interval_secs: u64,

    /// Seconds a credit reservation (VerifyApiKey with `reserve`) holds
    /// before it is charged at the reserved amount and can no longer be
    /// settled or released.
    #[arg(long, env = "RESERVATION_TTL_SECS", default_value_t = 600)]
    pub reservation_ttl_secs: u64,

    /// Days the audit log keeps an event (counted from its last repeat);
    /// older ones are deleted at start and then hourly, in small batches.
    #[arg(long, env = "AUDIT_RETENTION_DAYS", default_value_t = 365)]
    pub audit_retention_days: u64,

    /// Days an ended session (logged out, revoked, or with every refresh
    /// token expired), an expired refresh token and an expired invitation
    /// are kept before they are deleted, at start and then hourly.
    #[arg(long, env = "SESSION_RETENTION_DAYS", default_value_t = 30)]
    pub session_retention_days: u64,

    /// Days the hourly usage history (GetApiKeyUsage, GetChatbotUsage)
    /// keeps an hour; older hours are deleted at start and then hourly.
    #[arg(long, env = "USAGE_RETENTION_DAYS", default_value_t = 400)]
    pub usage_retention_days: u64,

    /// Seconds between database health checks (readiness).
    #[arg(long, env = "HEALTH_CHECK_INTERVAL_SECS", default_value_t = 5)]
    pub health_check_interval_secs: u64,

    /// On SIGTERM, seconds to keep serving while reporting NOT_SERVING, so
    /// load balancers stop routing here first.
    #[arg(long, env = "SHUTDOWN_DRAIN_DELAY_SECS", default_value_t = 5)]
    pub shutdown_drain_delay_secs: u64,

    /// Seconds in-flight RPCs get to finish after the listener closes.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 15)]
    pub shutdown_grace_secs: u64,

    /// Largest accepted request message in bytes.
    #[arg(long, env = "MAX_REQUEST_BYTES", default_value_t = 64 * 1024)]
    pub max_request_bytes: usize,

    /// Deadline in seconds for RPCs whose client sets none.
    #[arg(long, env = "DEFAULT_RPC_TIMEOUT_SECS", default_value_t = 30)]
    pub default_rpc_timeout_secs: u64,

    /// Maximum concurrent requests (HTTP/2 streams) per connection,
    /// announced to clients, which wait for a free stream beyond it.
    #[arg(
        long,
        env = "MAX_CONCURRENT_REQUESTS_PER_CONNECTION",
        default_value_t = 256
    )]
    pub max_concurrent_requests_per_connection: usize,

    /// Requests per second per authenticated user (burst: rate x burst factor); 0 = off.
    #[arg(long, env = "RATE_LIMIT_PER_USER", default_value_t = 100)]
    pub rate_limit_per_user: u32,

    /// Requests per second per client address for calls without a token; 0 = off.
    #[arg(long, env = "RATE_LIMIT_PER_ADDRESS", default_value_t = 20)]
    pub rate_limit_per_address: u32,

    /// VerifyApiKey calls per second per API key; 0 = off.
    #[arg(long, env = "RATE_LIMIT_PER_API_KEY", default_value_t = 1000)]
    pub rate_limit_per_api_key: u32,

    /// Bucket size as a multiple of the per-second rate.
    #[arg(long, env = "RATE_LIMIT_BURST_FACTOR", default_value_t = 2)]
    pub rate_limit_burst_factor: u32,

    /// Redis (`redis://[:password@]host:port[/db]`, or `rediss://` for
    /// TLS) holding the rate-limit counts, so every replica enforces one
    /// shared limit. Unset: each replica counts in process and enforces its
    /// own.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<SecretString>,

    /// PEM file of the CA certificates a `rediss://` Redis's certificate
    /// must chain to; unset: the system's roots.
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,

    /// Prefix of every Redis key this service writes (several deployments,
    /// or tests, can share one Redis).
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "chatbot-backend:")]
    pub redis_key_prefix: String,

    /// WatchEvents streams one replica serves at once; more are refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_EVENT_STREAMS", default_value_t = 1000)]
    pub max_event_streams: usize,

    /// NATS with JetStream (`nats://[user:password@]host:port`, or
    /// `tls://` for TLS) to publish every organization's events to, each on
    /// `<NATS_SUBJECT_PREFIX>.<organization id>.<event type>` with the event
    /// id as its message id. Unset: nothing is published.
    #[arg(long, env = "NATS_URL", hide_env_values = true)]
    pub nats_url: Option<SecretString>,

    /// PEM file of the CA certificates a `tls://` NATS's certificate must
    /// chain to; unset: the system's roots.
    #[arg(long, env = "NATS_CA_FILE")]
    pub nats_ca_file: Option<std::path::PathBuf>,

    /// The JetStream stream the events are stored in; created (capturing
    /// `<NATS_SUBJECT_PREFIX>.>`) if it does not exist.
    #[arg(long, env = "NATS_STREAM", default_value = "CHATBOT_EVENTS")]
    pub nats_stream: String,

    /// The first tokens of every subject an event is published on.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "chatbot.events")]
    pub nats_subject_prefix: String,

    /// Webhook URLs may name private, loopback and internal hosts (tests,
    /// receivers on the same network on premises).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE_TARGETS", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private_targets: bool,

    /// How long a webhook endpoint has to answer a delivery.
    #[arg(long, env = "WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
    pub webhook_timeout_secs: u64,

    /// Attempts of one event's delivery before the webhook is disabled.
    #[arg(long, env = "WEBHOOK_MAX_ATTEMPTS", default_value_t = 8)]
    pub webhook_max_attempts: u32,

    /// The wait after a delivery's first failed attempt; each next wait is
    /// four times longer, at most ten hours (the default schedule: 5 s,
    /// 20 s, 80 s, 5 min, 21 min, 85 min, 5.7 h: about 7.5 hours in all).
    #[arg(long, env = "WEBHOOK_RETRY_BASE_MILLIS", default_value_t = 5000)]
    pub webhook_retry_base_millis: u64,

    /// A key whose expiry comes within this many hours gets one
    /// api_key.expiring event; 0: none.
    #[arg(long, env = "KEY_EXPIRY_NOTICE_HOURS", default_value_t = 72)]
    pub key_expiry_notice_hours: u64,

    /// How often each replica looks for due lifecycle events (keys
    /// expiring, credits low or exhausted).
    #[arg(long, env = "LIFECYCLE_EVENTS_INTERVAL_SECS", default_value_t = 15)]
    pub lifecycle_events_interval_secs: u64,

    /// Address for the Prometheus metrics endpoint; unset = no endpoint.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Address of the operator console (its pages and gRPC-Web for the
    /// browser); `off` = no console. Port 0 picks a free port (logged).
    #[arg(long, env = "CONSOLE_LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub console_listen_addr: ConsoleAddr,

    /// Origins (scheme://host[:port], comma-separated) whose pages may call
    /// the console's gRPC-Web API besides the console itself; unset = none.
    #[arg(long, env = "CONSOLE_ALLOWED_ORIGINS")]
    pub console_allowed_origins: Option<ConsoleOrigins>,

    /// Log format: plain or json. Filter with RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// Memory in KiB each new password hash (argon2id) uses. Below the
    /// default (OWASP's recommendation) the server warns at start; tests
    /// use argon2's minimum, 8.
    #[arg(long, env = "PASSWORD_HASH_MEMORY_KIB", default_value_t = 19_456)]
    pub password_hash_memory_kib: u32,

    /// Passes over that memory per new password hash. Below the default
    /// (OWASP's recommendation) the server warns at start.
    #[arg(long, env = "PASSWORD_HASH_ITERATIONS", default_value_t = 2)]
    pub password_hash_iterations: u32,
}

/// Settings that passed [`Settings::validate`], with what needed parsing
/// parsed once: the configuration the server is built from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Every value within its range.
    pub settings: Settings,
    /// The store `DATABASE_URL` selects.
    pub database: DatabaseTarget,
}

impl Settings {
    pub fn rate_limit_settings(&self) -> crate::rate_limit::RateLimitSettings {
        crate::rate_limit::RateLimitSettings {
            per_user: self.rate_limit_per_user,
            per_address: self.rate_limit_per_address,
            per_api_key: self.rate_limit_per_api_key,
            burst_factor: self.rate_limit_burst_factor,
        }
    }

    /// The argon2 cost of new password hashes, for the server and the
    /// operator commands alike.
    pub fn password_hash_cost(&self) -> crate::auth::HashCost {
        crate::auth::HashCost {
            memory_kib: self.password_hash_memory_kib,
            iterations: self.password_hash_iterations,
        }
    }

    pub fn pool_settings(&self) -> crate::db::PoolSettings {
        crate::db::PoolSettings {
            max_size: self.database_pool_size,
            acquire_timeout: Duration::from_millis(self.database_acquire_timeout_ms),
            connect_timeout: Duration::from_millis(self.database_connect_timeout_ms),
            statement_timeout: Duration::from_millis(self.database_statement_timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Settings;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    #[test]
    fn the_hash_duty_default_is_the_hashers_own() {
        let settings = Cli::parse_from(["test"]).settings;
        assert_eq!(
            settings.password_hash_duty_percent,
            crate::auth::DEFAULT_HASH_DUTY_PERCENT
        );
    }

    #[test]
    fn the_key_header_is_lower_case_and_not_authorization() {
        let parse = |header: &str| {
            Cli::try_parse_from(["test", "--ext-authz-api-key-header", header])
                .map(|cli| cli.settings.ext_authz_api_key_header)
        };
        assert_eq!(parse("X-Chatbot-Key").unwrap().as_str(), "x-chatbot-key");
        assert!(parse("Authorization").is_err());
        assert!(parse("not a header").is_err());
    }

    #[test]
    fn debug_prints_neither_the_secret_keys_nor_the_database_password() {
        let signing = "signing-key-that-is-at-least-32-bytes-long";
        let previous = "previous-key-that-is-at-least-32-bytes-long";
        let settings = Cli::parse_from([
            "test",
            "--database-url",
            "postgres://app:hunter2@db:5432/chatbot",
            "--secret-key",
            signing,
            "--secret-key-previous",
            previous,
        ])
        .settings;
        let settings_printed = format!("{settings:?}");
        let config = settings.validate().unwrap();
        let config_printed = format!("{config:?}");
        for printed in [settings_printed, config_printed] {
            for secret in [signing, previous, "hunter2"] {
                assert!(!printed.contains(secret), "{secret} in {printed}");
            }
            // Still useful: the other settings show.
            assert!(printed.contains("listen_addr"), "{printed}");
        }
    }
}
