//! Token-bucket rate limits per caller (governor's GCRA): per authenticated
//! user, per client network for anonymous calls (both applied by
//! [`RateLimitGate`] to every RPC), and per API key on VerifyApiKey and
//! Check (in [`crate::verification`], which knows the key). With `REDIS_URL` the counts live in Redis
//! and every replica shares them ([`shared`]); without it, or while Redis
//! does not answer, each replica counts in process and enforces its own.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::client_network;
use crate::domain::{ApiKeyDigest, ApiKeyId, KeyRateLimit, OrganizationId, UserId};

mod layer;
mod own_limits;
pub mod shared;

use own_limits::{Bucket, OwnLimits};

pub use layer::RateLimitGate;
pub use shared::SharedLimits;

/// Who a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKey {
    User(UserId),
    Address(IpAddr),
    /// First 16 bytes of the key's digest: enough to tell keys apart.
    ApiKey([u8; 16]),
    /// A key's own limit (`ApiKey.rate_limit`), which its owner sets.
    OwnLimit(ApiKeyId),
    /// An organization's limit (`Organization.rate_limit`), shared by all
    /// its keys.
    OrganizationLimit(OrganizationId),
    /// What the Redis probe checks to see that Redis answers.
    Probe,
}

impl RateKey {
    /// Calls from `address`, counted per [`client_network`].
    pub fn address(address: IpAddr) -> Self {
        RateKey::Address(client_network(address))
    }

    pub fn api_key(digest: &ApiKeyDigest) -> Self {
        let mut prefix = [0_u8; 16];
        prefix.copy_from_slice(&digest.0[..16]);
        RateKey::ApiKey(prefix)
    }
}

/// Per-second rates and bursts; a rate of 0 turns that limit off.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitSettings {
    pub per_user: u32,
    pub per_address: u32,
    pub per_api_key: u32,
    /// Burst size as a multiple of the per-second rate.
    pub burst_factor: u32,
}

/// One kind of limit: its quota, and the in-process counts.
struct Limiter {
    counts: DefaultKeyedRateLimiter<RateKey>,
    /// Time between two calls at the steady rate.
    interval: Duration,
    burst: u32,
}

impl Limiter {
    fn new(per_second: u32, burst_factor: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(per_second.saturating_mul(burst_factor.max(1)))?;
        Some(Self {
            counts: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            interval: Duration::from_secs(1) / per_second,
            burst: burst.get(),
        })
    }

    fn check_here(&self, key: RateKey) -> Result<(), Duration> {
        self.counts
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// The service's limiters.
#[derive(Clone)]
pub struct RateLimits {
    user: Option<Arc<Limiter>>,
    address: Option<Arc<Limiter>>,
    api_key: Option<Arc<Limiter>>,
    own_limits: Arc<OwnLimits>,
    shared: Option<Arc<SharedLimits>>,
}

/// What a check answers: at once (in process), or after asking Redis.
pub enum Verdict<F> {
    Now(Result<(), Duration>),
    Later(F),
}

impl RateLimits {
    pub fn new(settings: RateLimitSettings, shared: Option<SharedLimits>) -> Self {
        let make = |rate| Limiter::new(rate, settings.burst_factor).map(Arc::new);
        Self {
            user: make(settings.per_user),
            address: make(settings.per_address),
            api_key: make(settings.per_api_key),
            own_limits: Arc::default(),
            shared: shared.map(Arc::new),
        }
    }

    fn limiter(&self, key: RateKey) -> Option<&Arc<Limiter>> {
        match key {
            RateKey::User(_) => self.user.as_ref(),
            RateKey::Address(_) => self.address.as_ref(),
            RateKey::ApiKey(_) => self.api_key.as_ref(),
            RateKey::OwnLimit(_) | RateKey::OrganizationLimit(_) | RateKey::Probe => None,
        }
    }

    /// `Err(retry_after)` when `key` has used up its bucket: in Redis if it
    /// is configured and answers, else in this process.
    pub async fn check(&self, key: RateKey) -> Result<(), Duration> {
        match self.verdict(key) {
            Verdict::Now(answer) => answer,
            Verdict::Later(answer) => answer.await,
        }
    }

    /// [`check`](Self::check) that answers at once when it can (no limit
    /// on `key`, or no Redis), so the gate boxes no future then.
    pub fn verdict(
        &self,
        key: RateKey,
    ) -> Verdict<impl std::future::Future<Output = Result<(), Duration>> + Send + 'static> {
        let Some(limiter) = self.limiter(key).cloned() else {
            return Verdict::Now(Ok(()));
        };
        let Some(shared) = self.shared.clone() else {
            return Verdict::Now(limiter.check_here(key));
        };
        Verdict::Later(async move {
            match shared.check(key, limiter.interval, limiter.burst).await {
                Some(answer) => answer,
                None => limiter.check_here(key),
            }
        })
    }

    /// Limits owners set (a key's own, its organization's): a call must fit
    /// each of `limits` (whose bucket, the limit, what the call counts) and
    /// is counted in all or, refused, in none. `Err((retry_after, i))` names
    /// the first that refused. In Redis if it is configured and answers
    /// (one atomic script for all of them), else in this process.
    pub async fn check_own_limits<const N: usize>(
        &self,
        limits: [(RateKey, KeyRateLimit, u32); N],
    ) -> Result<(), (Duration, usize)> {
        let buckets = limits.map(|(key, limit, weight)| Bucket {
            key,
            interval: limit.interval(),
            burst: limit.calls(),
            weight,
        });
        if let Some(shared) = &self.shared {
            if let Some(answer) = shared.check_all(&buckets).await {
                return answer;
            }
        }
        self.own_limits.check_all(&buckets)
    }

    /// Forgets idle callers; run periodically to bound memory.
    pub fn sweep(&self) {
        self.own_limits.sweep();
        for limiter in [&self.user, &self.address, &self.api_key]
            .into_iter()
            .flatten()
        {
            limiter.counts.retain_recent();
            limiter.counts.shrink_to_fit();
        }
    }
}
