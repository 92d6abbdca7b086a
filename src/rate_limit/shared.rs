//! Limits shared by every replica through Redis (`REDIS_URL`): each check
//! is one call of a GCRA script, atomic in Redis and timed by Redis's own
//! clock, so a limit of N per second is N for the whole deployment, not N
//! per replica.
//!
//! Redis is a helper, not a dependency: while it is unreachable, slow
//! (past [`CHECK_TIMEOUT`]) or not yet connected, [`SharedLimits::check`]
//! answers `None` and the caller counts in process instead. The first
//! failure of an outage logs one WARN, every fallback is counted in the
//! `rate_limit_store_fallbacks` metric, and the first success after it
//! logs that Redis is back. Readiness never depends on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use super::RateKey;

/// How long a check waits for Redis before counting in process.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(50);

/// GCRA (as governor computes it in process): every call moves the key's
/// theoretical arrival time (TAT) on by one emission interval; a call is
/// allowed if that leaves the TAT at most `burst` intervals ahead of now.
/// A refused call changes nothing. Returns {1, 0} or {0, retry-after µs}.
const GCRA: &str = r"
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now_us)
if tat < now_us then tat = now_us end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if allow_at > now_us then
  return {0, allow_at - now_us}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now_us) / 1000) + 1)
return {1, 0}
";

/// See the module documentation.
pub struct SharedLimits {
    connection: Arc<RwLock<Option<ConnectionManager>>>,
    script: Script,
    prefix: String,
    in_outage: AtomicBool,
    fallbacks: Counter,
}

impl SharedLimits {
    /// Connects to Redis, waiting at most a second: a server starts
    /// while Redis is down, counting in process and connecting in the
    /// background. `url` is checked here, so a malformed `REDIS_URL` stops
    /// startup.
    pub async fn connect(url: &str, prefix: String, fallbacks: Counter) -> anyhow::Result<Self> {
        let client = Client::open(url).map_err(|error| {
            // The URL may hold a password: name the problem, not the URL.
            anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {:?}", error.kind())
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(CHECK_TIMEOUT)
            .set_number_of_retries(1);
        let connection = Arc::new(RwLock::new(None));
        let slot = connection.clone();
        let first = ConnectionManager::new_with_config(client.clone(), config.clone());
        let connected = match tokio::time::timeout(Duration::from_secs(1), first).await {
            Ok(Ok(manager)) => {
                tracing::info!("connected to Redis: rate limits are shared by every replica");
                *slot.write().unwrap_or_else(|e| e.into_inner()) = Some(manager);
                true
            }
            failed => {
                let reason = match failed {
                    Ok(Err(error)) => format!("{:?}", error.kind()),
                    _ => "timed out".to_owned(),
                };
                tracing::warn!(%reason, "cannot reach Redis; rate limits count in this process until it answers");
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let next =
                            ConnectionManager::new_with_config(client.clone(), config.clone());
                        if let Ok(manager) = next.await {
                            tracing::info!(
                                "connected to Redis: rate limits are shared by every replica"
                            );
                            *slot.write().unwrap_or_else(|e| e.into_inner()) = Some(manager);
                            return;
                        }
                    }
                });
                false
            }
        };
        Ok(Self {
            connection,
            script: Script::new(GCRA),
            prefix,
            // Unreachable at start is already an outage, warned about above.
            in_outage: AtomicBool::new(!connected),
            fallbacks,
        })
    }

    /// The shared answer (`Err(retry_after)` when refused), or `None` when
    /// Redis cannot give one now.
    pub async fn check(
        &self,
        key: RateKey,
        interval: Duration,
        burst: u32,
    ) -> Option<Result<(), Duration>> {
        let connection = self
            .connection
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let answer = match connection {
            Some(mut connection) => {
                let interval_us = u64::try_from(interval.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                let mut invocation = self.script.key(self.redis_key(key));
                invocation.arg(interval_us).arg(burst);
                tokio::time::timeout(
                    CHECK_TIMEOUT,
                    invocation.invoke_async::<(i64, i64)>(&mut connection),
                )
                .await
                .map_err(|_| "timed out".to_owned())
                .and_then(|result| result.map_err(|error| format!("{:?}", error.kind())))
            }
            None => Err("not connected".to_owned()),
        };
        match answer {
            Ok((allowed, retry_after_us)) => {
                if self.in_outage.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: rate limits are shared again");
                }
                Some(if allowed == 1 {
                    Ok(())
                } else {
                    Err(Duration::from_micros(retry_after_us.max(0).unsigned_abs()))
                })
            }
            Err(reason) => {
                self.fallbacks.inc();
                if !self.in_outage.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%reason, "Redis did not answer a rate-limit check; counting in this process until it does");
                }
                None
            }
        }
    }

    fn redis_key(&self, key: RateKey) -> String {
        let prefix = &self.prefix;
        match key {
            RateKey::User(user) => format!("{prefix}rate:user:{user}"),
            RateKey::Address(address) => format!("{prefix}rate:address:{address}"),
            RateKey::ApiKey(digest) => {
                let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
                format!("{prefix}rate:api_key:{hex}")
            }
            RateKey::OwnLimit(id) => format!("{prefix}rate:own_limit:{id}"),
        }
    }
}
