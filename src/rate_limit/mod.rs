//! Token-bucket rate limits per caller (governor's GCRA): per authenticated
//! user, per client network for anonymous calls (both applied by
//! [`RateLimitGate`] to every RPC), and per API key on VerifyApiKey (in its
//! handler, which knows the key). In-process, so each replica enforces its
//! own share.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::client_network;
use crate::domain::{ApiKeyDigest, UserId};

mod layer;

pub use layer::RateLimitGate;

/// Who a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKey {
    User(UserId),
    Address(IpAddr),
    /// First 16 bytes of the key's digest: enough to tell keys apart.
    ApiKey([u8; 16]),
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

struct Limiter(DefaultKeyedRateLimiter<RateKey>);

impl Limiter {
    fn new(per_second: u32, burst_factor: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(per_second.saturating_mul(burst_factor.max(1)))?;
        Some(Self(RateLimiter::keyed(
            Quota::per_second(rate).allow_burst(burst),
        )))
    }
}

/// The service's limiters.
#[derive(Clone)]
pub struct RateLimits {
    user: Option<Arc<Limiter>>,
    address: Option<Arc<Limiter>>,
    api_key: Option<Arc<Limiter>>,
}

impl RateLimits {
    pub fn new(settings: RateLimitSettings) -> Self {
        let make = |rate| Limiter::new(rate, settings.burst_factor).map(Arc::new);
        Self {
            user: make(settings.per_user),
            address: make(settings.per_address),
            api_key: make(settings.per_api_key),
        }
    }

    /// `Err(retry_after)` when `key` has used up its bucket.
    pub fn check(&self, key: RateKey) -> Result<(), Duration> {
        let limiter = match key {
            RateKey::User(_) => &self.user,
            RateKey::Address(_) => &self.address,
            RateKey::ApiKey(_) => &self.api_key,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter
            .0
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets idle callers; run periodically to bound memory.
    pub fn sweep(&self) {
        for limiter in [&self.user, &self.address, &self.api_key]
            .into_iter()
            .flatten()
        {
            limiter.0.retain_recent();
            limiter.0.shrink_to_fit();
        }
    }
}
