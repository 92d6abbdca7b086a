//! In-process cache of VerifyApiKey lookups, so verifying a hot key does
//! not reach the database.
//!
//! Correctness comes before hits:
//! - Entries hold the row, not the answer: revocation and expiry are judged
//!   at every read, so a key expiring (say, at the end of a rotation grace
//!   period) needs no invalidation.
//! - Every change that alters a cached row (revoke, rotate, delete a key;
//!   update or delete its chatbot; delete its owner) drops the matching
//!   entries here at once, and on every other replica through PostgreSQL
//!   `NOTIFY` (see [`crate::db::listen_for_invalidations`]).
//! - A lookup that raced an invalidation is not cached (a generation
//!   counter), so a stale row read just before a revoke cannot outlive it.
//! - While the notification listener is down the cache is bypassed, and
//!   entries live at most the TTL, which bounds a missed notification.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::db::models::VerificationRecord;
use crate::domain::{ApiKeyDigest, ApiKeyId, ChatbotId, UserId};

/// Shards keep 64 concurrent verifications from queueing on one lock.
const SHARDS: usize = 16;

/// What a change made stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    Key(ApiKeyId),
    Chatbot(ChatbotId),
    Owner(UserId),
}

impl Invalidation {
    /// The `NOTIFY` payload: `key:<id>`, `chatbot:<uuid>` or `user:<uuid>`.
    pub fn payload(&self) -> String {
        match self {
            Self::Key(id) => format!("key:{id}"),
            Self::Chatbot(id) => format!("chatbot:{id}"),
            Self::Owner(id) => format!("user:{id}"),
        }
    }

    pub fn parse(payload: &str) -> Option<Self> {
        let (kind, id) = payload.split_once(':')?;
        match kind {
            "key" => id.parse().ok().map(Self::Key),
            "chatbot" => id.parse().ok().map(Self::Chatbot),
            "user" => id.parse().ok().map(Self::Owner),
            _ => None,
        }
    }

    fn matches(&self, record: &VerificationRecord) -> bool {
        match *self {
            Self::Key(id) => record.id == id,
            Self::Chatbot(id) => record.chatbot_id == id,
            Self::Owner(id) => record.owner_id == id,
        }
    }
}

/// A cached lookup: the key's row, or `None` for a key that does not exist.
#[derive(Clone)]
struct Entry {
    record: Option<Arc<VerificationRecord>>,
    cached_at: Instant,
}

/// The result of [`ApiKeyCache::get`].
pub enum Lookup {
    /// Cached: the row, or `None` if the key does not exist.
    Hit(Option<Arc<VerificationRecord>>),
    /// Not cached: read the database, then [`ApiKeyCache::insert`] with
    /// this generation.
    Miss(u64),
}

pub struct ApiKeyCache {
    shards: Vec<Mutex<HashMap<[u8; 32], Entry>>>,
    shard_capacity: usize,
    ttl: Duration,
    /// Bumped by every invalidation; see the module docs.
    generation: AtomicU64,
    /// False while invalidations could be missed (listener down) or when
    /// configured off.
    active: AtomicBool,
}

impl ApiKeyCache {
    /// `capacity` 0 or `ttl` zero turns the cache off. It starts inactive;
    /// [`ApiKeyCache::activate`] turns it on once invalidations flow.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_capacity: capacity.div_ceil(SHARDS),
            ttl,
            generation: AtomicU64::new(0),
            active: AtomicBool::new(false),
        }
    }

    fn enabled(&self) -> bool {
        self.shard_capacity > 0 && !self.ttl.is_zero()
    }

    fn shard(&self, digest: &ApiKeyDigest) -> &Mutex<HashMap<[u8; 32], Entry>> {
        // The digest is uniformly random: any byte picks a shard evenly.
        &self.shards[usize::from(digest.0[0]) % SHARDS]
    }

    /// Whether lookups are being served from the cache.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Starts serving from the cache, empty: anything cached before may
    /// have missed an invalidation.
    pub fn activate(&self) {
        if self.enabled() {
            self.clear();
            self.active.store(true, Ordering::Release);
        }
    }

    /// Stops serving from the cache (invalidations may be missed).
    pub fn deactivate(&self) {
        self.active.store(false, Ordering::Release);
        self.clear();
    }

    pub fn get(&self, digest: &ApiKeyDigest) -> Lookup {
        // Read the generation first: an invalidation after this point makes
        // the caller's insert a no-op.
        let generation = self.generation.load(Ordering::Acquire);
        if !self.is_active() {
            return Lookup::Miss(generation);
        }
        let shard = self.shard(digest).lock().unwrap_or_else(|e| e.into_inner());
        match shard.get(&digest.0) {
            Some(entry) if entry.cached_at.elapsed() < self.ttl => {
                Lookup::Hit(entry.record.clone())
            }
            _ => Lookup::Miss(generation),
        }
    }

    /// Caches a lookup made after [`ApiKeyCache::get`] returned
    /// `Miss(generation)`, unless something was invalidated since.
    pub fn insert(
        &self,
        digest: &ApiKeyDigest,
        record: Option<Arc<VerificationRecord>>,
        generation: u64,
    ) {
        if !self.is_active() {
            return;
        }
        let mut shard = self.shard(digest).lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if shard.len() >= self.shard_capacity && !shard.contains_key(&digest.0) {
            let ttl = self.ttl;
            shard.retain(|_, entry| entry.cached_at.elapsed() < ttl);
            if shard.len() >= self.shard_capacity {
                // Still full of live entries: drop one. HashMap order is
                // randomly seeded, so this is random eviction, which an
                // attacker cannot aim at a particular key.
                if let Some(victim) = shard.keys().next().copied() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(
            digest.0,
            Entry {
                record,
                cached_at: Instant::now(),
            },
        );
    }

    /// Drops every entry the change made stale. Rare (a revoke, a delete),
    /// so a scan of the bounded cache is fine.
    pub fn invalidate(&self, what: Invalidation) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|_, entry| entry.record.as_ref().is_none_or(|r| !what.matches(r)));
        }
    }

    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// Entries held, live or not yet swept.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: i64, chatbot: ChatbotId, owner: UserId) -> Arc<VerificationRecord> {
        Arc::new(VerificationRecord {
            id: ApiKeyId(id),
            chatbot_id: chatbot,
            revoked: false,
            expires_at: None,
            owner_id: owner,
            llm_endpoint_url: "https://llm.example.com".into(),
        })
    }

    fn digest(byte: u8) -> ApiKeyDigest {
        ApiKeyDigest([byte; 32])
    }

    fn active_cache() -> ApiKeyCache {
        let cache = ApiKeyCache::new(64, Duration::from_secs(60));
        cache.activate();
        cache
    }

    fn cache_miss(cache: &ApiKeyCache, d: &ApiKeyDigest) -> u64 {
        match cache.get(d) {
            Lookup::Miss(generation) => generation,
            Lookup::Hit(_) => panic!("expected a miss"),
        }
    }

    #[test]
    fn a_cached_row_is_served_until_its_key_chatbot_or_owner_is_invalidated() {
        let (chatbot, owner) = (ChatbotId::generate(), UserId::generate());
        for what in [
            Invalidation::Key(ApiKeyId(1)),
            Invalidation::Chatbot(chatbot),
            Invalidation::Owner(owner),
        ] {
            let cache = active_cache();
            let generation = cache_miss(&cache, &digest(1));
            cache.insert(&digest(1), Some(record(1, chatbot, owner)), generation);
            assert!(matches!(cache.get(&digest(1)), Lookup::Hit(Some(_))));
            cache.invalidate(Invalidation::Key(ApiKeyId(2)));
            assert!(matches!(cache.get(&digest(1)), Lookup::Hit(Some(_))));
            cache.invalidate(what);
            cache_miss(&cache, &digest(1));
        }
    }

    #[test]
    fn a_lookup_that_raced_an_invalidation_is_not_cached() {
        let cache = active_cache();
        let generation = cache_miss(&cache, &digest(1));
        cache.invalidate(Invalidation::Key(ApiKeyId(1)));
        let (chatbot, owner) = (ChatbotId::generate(), UserId::generate());
        cache.insert(&digest(1), Some(record(1, chatbot, owner)), generation);
        cache_miss(&cache, &digest(1));
    }

    #[test]
    fn an_inactive_or_disabled_cache_never_answers() {
        let (chatbot, owner) = (ChatbotId::generate(), UserId::generate());
        let inactive = ApiKeyCache::new(64, Duration::from_secs(60));
        let generation = cache_miss(&inactive, &digest(1));
        inactive.insert(&digest(1), Some(record(1, chatbot, owner)), generation);
        cache_miss(&inactive, &digest(1));

        let disabled = ApiKeyCache::new(0, Duration::from_secs(60));
        disabled.activate();
        assert!(!disabled.is_active());
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = ApiKeyCache::new(32, Duration::from_secs(60));
        cache.activate();
        for byte in 0..=255u8 {
            let generation = cache_miss(&cache, &digest(byte));
            cache.insert(&digest(byte), None, generation);
        }
        assert!(cache.len() <= 32, "{} entries", cache.len());
    }

    #[test]
    fn invalidation_payloads_round_trip() {
        for what in [
            Invalidation::Key(ApiKeyId(42)),
            Invalidation::Chatbot(ChatbotId::generate()),
            Invalidation::Owner(UserId::generate()),
        ] {
            assert_eq!(Invalidation::parse(&what.payload()), Some(what));
        }
        assert_eq!(Invalidation::parse("bogus"), None);
        assert_eq!(Invalidation::parse("key:x"), None);
    }
}
