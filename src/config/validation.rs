//! [`Settings::validate`]: every setting within the range it can work in,
//! checked once before anything starts, each refusal naming its setting.

use secrecy::ExposeSecret;

use super::{Config, ConsoleAddr, Settings};
use crate::db::DatabaseTarget;

/// PostgreSQL's `statement_timeout` is a 32-bit count of milliseconds; the
/// other timeouts share its bound (about 24 days).
const MAX_TIMEOUT_MS: u64 = i32::MAX as u64;
/// Intervals and delays: a day at most.
const MAX_INTERVAL_SECS: u64 = 24 * 3600;

impl Settings {
    /// Rejects settings that cannot work, naming the bad one; otherwise
    /// parses what needs parsing, once.
    pub fn validate(self) -> anyhow::Result<Config> {
        if let Some(key) = &self.secret_key {
            let len = key.expose_secret().len();
            anyhow::ensure!(
                len >= 32,
                "SECRET_KEY must be at least 32 bytes (got {len})"
            );
        }
        if let Some(key) = &self.secret_key_previous {
            anyhow::ensure!(
                key.expose_secret().len() >= 32,
                "SECRET_KEY_PREVIOUS must be at least 32 bytes"
            );
            anyhow::ensure!(
                self.secret_key.is_some(),
                "SECRET_KEY_PREVIOUS needs SECRET_KEY to be set"
            );
        }
        // Each (name, value, least, most) must hold: outside it the server
        // would start but could not work (every RPC cancelled, no answer
        // at all, a panic on the first token, a database that refuses the
        // session setting...).
        let bounds: [(&str, u64, u64, u64); 30] = [
            (
                "DATABASE_POOL_SIZE",
                self.database_pool_size as u64,
                1,
                10_000,
            ),
            (
                "DATABASE_ACQUIRE_TIMEOUT_MS",
                self.database_acquire_timeout_ms,
                1,
                MAX_TIMEOUT_MS,
            ),
            (
                "DATABASE_CONNECT_TIMEOUT_MS",
                self.database_connect_timeout_ms,
                1,
                MAX_TIMEOUT_MS,
            ),
            // PostgreSQL's statement_timeout is a 32-bit count of milliseconds.
            (
                "DATABASE_STATEMENT_TIMEOUT_MS",
                self.database_statement_timeout_ms,
                1,
                MAX_TIMEOUT_MS,
            ),
            (
                "MAX_CONCURRENT_HASHES",
                self.max_concurrent_hashes as u64,
                1,
                1024,
            ),
            (
                "ACCESS_TOKEN_TTL_SECS",
                self.access_token_ttl_secs,
                1,
                24 * 3600,
            ),
            (
                "REFRESH_TOKEN_TTL_SECS",
                self.refresh_token_ttl_secs,
                1,
                10 * 365 * 24 * 3600,
            ),
            (
                "LOGIN_MAX_FAILURES_PER_EMAIL",
                self.login_max_failures_per_email.into(),
                1,
                1_000_000,
            ),
            (
                "LOGIN_MAX_FAILURES_PER_ADDRESS",
                self.login_max_failures_per_address.into(),
                1,
                1_000_000,
            ),
            (
                "LOGIN_THROTTLE_WINDOW_SECS",
                self.login_throttle_window_secs,
                1,
                365 * 24 * 3600,
            ),
            (
                "MAX_ACTIVE_API_KEYS_PER_CHATBOT",
                u64::try_from(self.max_active_api_keys_per_chatbot).unwrap_or(0),
                1,
                1_000_000,
            ),
            (
                "READ_BATCHES_IN_FLIGHT",
                self.read_batches_in_flight as u64,
                1,
                1024,
            ),
            (
                "SPEND_BATCHES_IN_FLIGHT",
                self.spend_batches_in_flight as u64,
                1,
                1024,
            ),
            (
                "MAX_QUEUED_BATCH_ITEMS",
                self.max_queued_batch_items as u64,
                1,
                1_000_000,
            ),
            (
                "MAX_QUEUED_HASHES",
                self.max_queued_hashes as u64,
                1,
                65_536,
            ),
            (
                "PASSWORD_HASH_DUTY_PERCENT",
                u64::from(self.password_hash_duty_percent),
                1,
                100,
            ),
            (
                "LAST_USED_FLUSH_INTERVAL_SECS",
                self.last_used_flush_interval_secs,
                1,
                MAX_INTERVAL_SECS,
            ),
            (
                "USAGE_FLUSH_INTERVAL_SECS",
                self.usage_flush_interval_secs,
                1,
                MAX_INTERVAL_SECS,
            ),
            (
                "RESERVATION_TTL_SECS",
                self.reservation_ttl_secs,
                1,
                7 * 24 * 3600,
            ),
            (
                "AUDIT_RETENTION_DAYS",
                self.audit_retention_days,
                1,
                100 * 366,
            ),
            (
                "SESSION_RETENTION_DAYS",
                self.session_retention_days,
                1,
                100 * 366,
            ),
            (
                "USAGE_RETENTION_DAYS",
                self.usage_retention_days,
                1,
                100 * 366,
            ),
            (
                "HEALTH_CHECK_INTERVAL_SECS",
                self.health_check_interval_secs,
                1,
                MAX_INTERVAL_SECS,
            ),
            (
                "SHUTDOWN_DRAIN_DELAY_SECS",
                self.shutdown_drain_delay_secs,
                0,
                MAX_INTERVAL_SECS,
            ),
            (
                "SHUTDOWN_GRACE_SECS",
                self.shutdown_grace_secs,
                0,
                MAX_INTERVAL_SECS,
            ),
            (
                "MAX_REQUEST_BYTES",
                self.max_request_bytes as u64,
                1024,
                64 * 1024 * 1024,
            ),
            (
                "DEFAULT_RPC_TIMEOUT_SECS",
                self.default_rpc_timeout_secs,
                1,
                MAX_INTERVAL_SECS,
            ),
            (
                "MAX_CONCURRENT_REQUESTS_PER_CONNECTION",
                self.max_concurrent_requests_per_connection as u64,
                1,
                u32::MAX.into(),
            ),
            (
                "RATE_LIMIT_BURST_FACTOR",
                self.rate_limit_burst_factor.into(),
                1,
                1_000,
            ),
            (
                "API_KEY_CACHE_TTL_SECS",
                self.api_key_cache_ttl_secs,
                0,
                MAX_INTERVAL_SECS,
            ),
        ];
        for (name, value, least, most) in bounds {
            anyhow::ensure!(
                (least..=most).contains(&value),
                "{name} must be between {least} and {most} (got {value})"
            );
        }
        // argon2 accepts no less than 8 KiB and 1 pass; above 1 GiB or 100
        // passes every Login would outlast its deadline.
        let hash_cost_bounds: [(&str, u32, u32, u32); 2] = [
            (
                "PASSWORD_HASH_MEMORY_KIB",
                self.password_hash_memory_kib,
                8,
                1024 * 1024,
            ),
            (
                "PASSWORD_HASH_ITERATIONS",
                self.password_hash_iterations,
                1,
                100,
            ),
        ];
        for (name, value, least, most) in hash_cost_bounds {
            anyhow::ensure!(
                (least..=most).contains(&value),
                "{name} must be between {least} and {most} (got {value})"
            );
        }
        if let Some(metrics_addr) = self.metrics_addr {
            anyhow::ensure!(
                metrics_addr != self.listen_addr || self.listen_addr.port() == 0,
                "METRICS_ADDR must differ from LISTEN_ADDR ({metrics_addr})"
            );
        }
        if let ConsoleAddr(Some(console)) = self.console_listen_addr {
            anyhow::ensure!(
                console.port() == 0
                    || (console != self.listen_addr && Some(console) != self.metrics_addr),
                "CONSOLE_LISTEN_ADDR must differ from LISTEN_ADDR and METRICS_ADDR ({console})"
            );
        }
        if self.redis_ca_file.is_some() {
            anyhow::ensure!(
                self.redis_url
                    .as_ref()
                    .is_some_and(|url| url.expose_secret().starts_with("rediss://")),
                "REDIS_CA_FILE needs a rediss:// (TLS) REDIS_URL"
            );
        }
        anyhow::ensure!(
            self.max_event_streams >= 1,
            "MAX_EVENT_STREAMS must be at least 1"
        );
        anyhow::ensure!(
            (1..=300).contains(&self.webhook_timeout_secs),
            "WEBHOOK_TIMEOUT_SECS must be between 1 and 300 (got {})",
            self.webhook_timeout_secs
        );
        anyhow::ensure!(
            (1..=30).contains(&self.webhook_max_attempts),
            "WEBHOOK_MAX_ATTEMPTS must be between 1 and 30 (got {})",
            self.webhook_max_attempts
        );
        anyhow::ensure!(
            self.webhook_retry_base_millis >= 1,
            "WEBHOOK_RETRY_BASE_MILLIS must be at least 1"
        );
        anyhow::ensure!(
            self.key_expiry_notice_hours <= 24 * 366,
            "KEY_EXPIRY_NOTICE_HOURS must be at most 8784 (366 days)"
        );
        anyhow::ensure!(
            (1..=3600).contains(&self.lifecycle_events_interval_secs),
            "LIFECYCLE_EVENTS_INTERVAL_SECS must be from 1 to 3600"
        );
        if self.nats_ca_file.is_some() {
            anyhow::ensure!(
                self.nats_url
                    .as_ref()
                    .is_some_and(|url| url.expose_secret().starts_with("tls://")),
                "NATS_CA_FILE needs a tls:// NATS_URL"
            );
        }
        if let Some(path) = &self.nats_ca_file {
            // Read when connecting, in the background: a missing file is
            // told at start, not as an outage.
            anyhow::ensure!(
                path.is_file(),
                "NATS_CA_FILE {} is not a readable file",
                path.display()
            );
        }
        // NATS names: tokens of letters, digits, '-' and '_' (no wildcard,
        // space or empty token); a stream's name is one such token.
        let token = |token: &str| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        anyhow::ensure!(
            self.nats_subject_prefix.split('.').all(token),
            "NATS_SUBJECT_PREFIX must be dot-separated tokens of letters, digits, '-' and '_' \
             (got {:?})",
            self.nats_subject_prefix
        );
        anyhow::ensure!(
            token(&self.nats_stream),
            "NATS_STREAM must be letters, digits, '-' and '_' (got {:?})",
            self.nats_stream
        );
        let database = DatabaseTarget::parse(self.database_url.expose_secret())?;
        if let Some(url) = &self.database_listen_url {
            anyhow::ensure!(
                matches!(database, DatabaseTarget::Postgres(_))
                    && matches!(
                        DatabaseTarget::parse(url.expose_secret())?,
                        DatabaseTarget::Postgres(_)
                    ),
                "DATABASE_LISTEN_URL needs a postgres:// URL, and a PostgreSQL DATABASE_URL"
            );
            // sslmode and sslrootcert (the file read) checked once here.
            crate::db::PgConnector::new(url.expose_secret(), "DATABASE_LISTEN_URL")?;
        }
        if let DatabaseTarget::Postgres(url) = &database {
            crate::db::PgConnector::new(url, "DATABASE_URL")?;
        }
        Ok(Config {
            settings: self,
            database,
        })
    }
}
