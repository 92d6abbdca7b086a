//! Limits shared by every replica through Redis (`REDIS_URL`): each check
//! is one call of a GCRA script, atomic in Redis and timed by Redis's own
//! clock, so a limit of N per second is N for the whole deployment, not N
//! per replica.
//!
//! Redis is a helper, not a dependency. Any fault (refused, reset, slow
//! past [`CHECK_TIMEOUT`], silent, bytes that are not a reply, a reply out
//! of range) starts an outage: one WARN, and from then on checks do not ask
//! Redis at all ([`SharedLimits::check`] answers `None` at once and the
//! caller counts in process), so an outage adds nothing to a call. A
//! background probe opens a fresh connection every [`PROBE_INTERVAL`] and
//! runs the script; the first that succeeds ends the outage with one INFO.
//! Every fallback is counted in the `rate_limit_store_fallbacks` metric.
//! Readiness never depends on Redis.
//!
//! TLS: a `rediss://` URL connects over TLS (rustls), the server's
//! certificate checked against `REDIS_CA_FILE` (or the system's roots) and
//! for the URL's host name. Unlike a fault, a certificate that fails that
//! check at start is a configuration error, not an outage: the start fails
//! naming REDIS_URL and REDIS_CA_FILE, rather than every replica quietly
//! counting its own limits.
//!
//! Nothing read from Redis is trusted: the script judges what it finds
//! under a key (a value it did not write counts as no calls yet; a time
//! further ahead than any call could have moved it is clamped to a full
//! bucket), and the answer's wait is clamped to what the limit allows.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncConnectionConfig;
use redis::{Client, RedisError, Script, TlsCertificates};
use tokio::sync::Notify;

use super::own_limits::Bucket;
use super::RateKey;

/// How long a check waits for Redis before counting in process.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(50);

/// How often an outage's background probe tries Redis again.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// How long the probe waits to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// GCRA (as governor computes it in process), over one or more buckets a
/// call must fit together (a key's own limit and its organization's): for
/// bucket i, KEYS[i] and ARGV[3i-2..3i] = interval µs, burst, weight. Every
/// call moves a bucket's theoretical arrival time (TAT) on by one emission
/// interval times its weight (a limit counting credits weighs a call by its
/// cost); a call is allowed if that leaves every TAT at most `burst`
/// intervals ahead of now, and only then are they all written: a refused
/// call changes nothing. The value is `<tat µs>:<interval µs>`, so that
/// when a limit changes, the calls already counted are re-timed at the new
/// interval: a raised limit lets the next call through at once, a lowered
/// one refuses it. Returns {1, 0, 0} or {0, retry-after µs, i}.
const GCRA: &str = r"
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local new_tats, intervals = {}, {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local weight = tonumber(ARGV[3 * i]) or 1
  local capacity = interval * burst
  local stored = redis.pcall('GET', KEYS[i])
  local tat, tat_interval = nil, interval
  if type(stored) == 'string' then
    local t, v = string.match(stored, '^(%d+):(%d+)$')
    if t then
      tat, tat_interval = tonumber(t), tonumber(v)
    else
      tat = tonumber(stored)
    end
  end
  if tat == nil or tat ~= tat or tat_interval == nil or tat_interval <= 0 then
    tat, tat_interval = now_us, interval
  end
  if tat < now_us then tat = now_us end
  if tat_interval ~= interval then
    tat = now_us + (tat - now_us) / tat_interval * interval
  end
  if tat > now_us + capacity then tat = now_us + capacity end
  local new_tat = tat + interval * weight
  local allow_at = new_tat - capacity
  if allow_at > now_us then
    return {0, math.ceil(allow_at - now_us), i}
  end
  new_tats[i], intervals[i] = new_tat, interval
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%.0f:%.0f', new_tats[i], intervals[i]),
    'PX', math.ceil((new_tats[i] - now_us) / 1000) + 1)
end
return {1, 0, 0}
";

/// See the module documentation.
pub struct SharedLimits {
    inner: Arc<Inner>,
}

struct Inner {
    /// The connection checks use; `None` during an outage.
    connection: RwLock<Option<ConnectionManager>>,
    client: Client,
    config: ConnectionManagerConfig,
    script: Script,
    prefix: String,
    in_outage: AtomicBool,
    /// Wakes the probe when an outage starts.
    outage_started: Arc<Notify>,
    fallbacks: Counter,
    /// 1 while checks go to Redis, 0 during an outage (a metric).
    up: Gauge,
}

impl SharedLimits {
    /// Connects to Redis, waiting at most a second: a server starts while
    /// Redis is down, counting in process until the probe reaches it.
    /// `url` and `ca_file` are checked here, so a malformed `REDIS_URL`, an
    /// unreadable `REDIS_CA_FILE` or a certificate that fails the check
    /// stops startup.
    pub async fn connect(
        url: &str,
        ca_file: Option<&Path>,
        prefix: String,
        fallbacks: Counter,
        up: Gauge,
    ) -> anyhow::Result<Self> {
        let client = open_client(url, ca_file)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(CHECK_TIMEOUT)
            .set_number_of_retries(1);
        let inner = Arc::new(Inner {
            connection: RwLock::new(None),
            client,
            config,
            script: Script::new(GCRA),
            prefix,
            in_outage: AtomicBool::new(false),
            outage_started: Arc::new(Notify::new()),
            fallbacks,
            up,
        });
        if url.starts_with("rediss://") {
            // Before the connection manager, which would retry a refused
            // handshake (after a second or more) as if it were an outage.
            let preflight = AsyncConnectionConfig::new().set_connection_timeout(CONNECT_TIMEOUT);
            let connected = tokio::time::timeout(
                CONNECT_TIMEOUT,
                inner
                    .client
                    .get_multiplexed_async_connection_with_config(&preflight),
            )
            .await;
            if let Ok(Err(error)) = connected {
                if let Fault::Tls(reason) = Fault::of_connecting(error) {
                    return Err(tls_failure(ca_file, &reason));
                }
            }
        }
        match inner.open_and_probe().await {
            Ok(connection) => {
                tracing::info!("connected to Redis: rate limits are shared by every replica");
                *inner.connection.write().unwrap_or_else(|e| e.into_inner()) = Some(connection);
                inner.up.set(1);
            }
            Err(Fault::Tls(reason)) => return Err(tls_failure(ca_file, &reason)),
            Err(Fault::Other(reason)) => inner.start_outage(
                &reason,
                "cannot reach Redis; rate limits count in this process until it answers",
            ),
        }
        tokio::spawn(probe_during_outages(
            Arc::downgrade(&inner),
            inner.outage_started.clone(),
        ));
        Ok(Self { inner })
    }

    /// The shared answer (`Err(retry_after)` when refused), or `None` when
    /// Redis cannot give one now; during an outage, at once.
    pub async fn check(
        &self,
        key: RateKey,
        interval: Duration,
        burst: u32,
    ) -> Option<Result<(), Duration>> {
        let bucket = Bucket {
            key,
            interval,
            burst,
            weight: 1,
        };
        let answer = self.check_all(&[bucket]).await?;
        Some(answer.map_err(|(wait, _)| wait))
    }

    /// As [`Self::check`], for a call that must fit every one of
    /// `buckets` (see [`GCRA`]): refused, which one refused.
    pub async fn check_all(&self, buckets: &[Bucket]) -> Option<Result<(), (Duration, usize)>> {
        let inner = &self.inner;
        let connection = match inner.in_outage.load(Ordering::Relaxed) {
            true => None,
            false => inner
                .connection
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        let Some(mut connection) = connection else {
            inner.fallbacks.inc();
            return None;
        };
        match inner.run(&mut connection, buckets).await {
            Ok(answer) => Some(answer),
            Err(reason) => {
                inner.fallbacks.inc();
                inner.start_outage(
                    &reason,
                    "Redis did not answer a rate-limit check; counting in this process until it does",
                );
                None
            }
        }
    }
}

impl Inner {
    /// One GCRA check, its reply judged: only {1, 0, 0} and {0, wait, i}
    /// with a bucket i of the call and a wait within that bucket are
    /// answers.
    async fn run(
        &self,
        connection: &mut ConnectionManager,
        buckets: &[Bucket],
    ) -> Result<Result<(), (Duration, usize)>, String> {
        let mut invocation = self.script.prepare_invoke();
        for bucket in buckets {
            let interval_us = u64::try_from(bucket.interval.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            invocation
                .key(self.redis_key(bucket.key))
                .arg(interval_us)
                .arg(bucket.burst)
                .arg(bucket.weight);
        }
        let reply = tokio::time::timeout(
            CHECK_TIMEOUT,
            invocation.invoke_async::<(i64, i64, i64)>(connection),
        )
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|error| format!("{:?}", error.kind()))?;
        let refusing = usize::try_from(reply.2)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| buckets.get(i).map(|bucket| (i, bucket)));
        match (reply, refusing) {
            ((1, _, _), _) => Ok(Ok(())),
            ((0, wait_us, _), Some((i, bucket))) if wait_us >= 0 => {
                let capacity = bucket.interval.saturating_mul(bucket.burst);
                Ok(Err((
                    Duration::from_micros(wait_us.unsigned_abs()).min(capacity),
                    i,
                )))
            }
            (other, _) => Err(format!("a reply out of range: {other:?}")),
        }
    }

    /// Marks an outage: checks stop asking Redis and the probe starts. Only
    /// the first failure of an outage logs.
    fn start_outage(&self, reason: &str, message: &'static str) {
        *self.connection.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.up.set(0);
        if !self.in_outage.swap(true, Ordering::Relaxed) {
            tracing::warn!(%reason, redis.key_prefix = %self.prefix, "{message}");
            self.outage_started.notify_one();
        }
    }

    /// A fresh connection (one a fault left in an unknown state is never
    /// reused) on which the script gives a valid answer.
    async fn open_and_probe(&self) -> Result<ConnectionManager, Fault> {
        let open = ConnectionManager::new_with_config(self.client.clone(), self.config.clone());
        let mut connection = tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .map_err(|_| Fault::Other("timed out".to_owned()))?
            .map_err(Fault::of_connecting)?;
        // Allowed or refused, a judged answer proves Redis works.
        let probe = Bucket {
            key: RateKey::Probe,
            interval: Duration::from_micros(1),
            burst: 1,
            weight: 1,
        };
        let _answer = self
            .run(&mut connection, &[probe])
            .await
            .map_err(Fault::Other)?;
        Ok(connection)
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
            RateKey::OrganizationLimit(id) => format!("{prefix}rate:organization_limit:{id}"),
            RateKey::Probe => format!("{prefix}rate:probe"),
        }
    }
}

/// The client for `url`: over TLS for `rediss://`, trusting `ca_file`'s
/// certificates if given (the system's roots otherwise).
fn open_client(url: &str, ca_file: Option<&Path>) -> anyhow::Result<Client> {
    // The URL may hold a password: name the problem, not the URL.
    let invalid = |error: RedisError| {
        anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {:?}", error.kind())
    };
    // redis builds its rustls configuration with the process's default
    // provider; ring is the only one compiled in, and installing it keeps
    // that so even if another crate's features add a second one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(ca_file) = ca_file else {
        return Client::open(url).map_err(invalid);
    };
    anyhow::ensure!(
        url.starts_with("rediss://"),
        "REDIS_CA_FILE is set, but REDIS_URL is not a rediss:// (TLS) URL"
    );
    let root_cert = std::fs::read(ca_file).map_err(|error| {
        anyhow::anyhow!("REDIS_CA_FILE: cannot read {}: {error}", ca_file.display())
    })?;
    let certificates = TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    };
    Client::build_with_tls(url, certificates).map_err(|error| match error.kind() {
        redis::ErrorKind::IoError => anyhow::anyhow!(
            "REDIS_CA_FILE: {} holds no usable PEM certificate: {error}",
            ca_file.display()
        ),
        _ => invalid(error),
    })
}

/// A refused TLS connection at start, naming the settings.
fn tls_failure(ca_file: Option<&Path>, reason: &str) -> anyhow::Error {
    let roots = match ca_file {
        Some(file) => format!(", REDIS_CA_FILE={}", file.display()),
        None => ", no REDIS_CA_FILE: the system's roots".to_owned(),
    };
    anyhow::anyhow!("REDIS_URL (rediss://{roots}): no TLS connection to Redis: {reason}")
}

/// Why a connection to Redis could not be had.
enum Fault {
    /// The TLS handshake failed (a certificate that fails the check, a
    /// server that does not speak TLS): a configuration error.
    Tls(String),
    /// Anything else: an outage.
    Other(String),
}

impl Fault {
    /// tokio-rustls hands rustls's error up inside an I/O error.
    fn of_connecting(error: RedisError) -> Self {
        let tls = std::error::Error::source(&error)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(tls) => Fault::Tls(tls.to_string()),
            None => Fault::Other(format!("{:?}", error.kind())),
        }
    }
}

/// Ends each outage: every [`PROBE_INTERVAL`] it tries a fresh connection,
/// and the first that answers correctly is installed. Stops when the
/// limits it serves are dropped.
async fn probe_during_outages(inner: Weak<Inner>, outage_started: Arc<Notify>) {
    loop {
        let in_outage = match inner.upgrade() {
            Some(strong) => strong.in_outage.load(Ordering::Relaxed),
            None => return,
        };
        if !in_outage {
            // Not holding the limits alive while waiting for an outage; the
            // sleep notices when they are dropped.
            tokio::select! {
                () = outage_started.notified() => {}
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
            continue;
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if let Ok(connection) = strong.open_and_probe().await {
            *strong.connection.write().unwrap_or_else(|e| e.into_inner()) = Some(connection);
            strong.in_outage.store(false, Ordering::Relaxed);
            strong.up.set(1);
            tracing::info!(
                redis.key_prefix = %strong.prefix,
                "Redis answers again: rate limits are shared again"
            );
        }
    }
}
