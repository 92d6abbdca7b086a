//! In-process caches of rows that other replicas can change: the
//! VerifyApiKey lookups, GetChatbot's chatbots, and the sessions,
//! memberships and service accounts behind callers. They exist so that a hot
//! key, a chatbot or a signed-in caller costs no database query, and they
//! must never serve a row that a committed change made stale.
//!
//! Correctness comes before hits:
//! - Every change that alters a cached row drops the matching entries here
//!   at once, and on every other replica through PostgreSQL `NOTIFY` (see
//!   [`crate::db::listen_for_invalidations`]), sent in the change's own
//!   transaction where the change is a security decision.
//! - A lookup that raced an invalidation is not cached (a generation
//!   counter), so a stale row read just before a change cannot outlive it.
//! - While the notification listener is down the cache is bypassed, and
//!   entries live at most the TTL, which bounds a missed notification.
//!
//! Hand-written rather than `moka`, measured: an invalidation names a key,
//! a chatbot or an owner, not the cache key (the secret's digest), so moka
//! would need its predicate invalidation (`invalidate_entries_if`, checked
//! lazily on every later read) plus this generation guard and a lock around
//! inserts. In instructions counted by callgrind (release build, 1,000
//! cached keys; BENCHMARKS.md), a hit costs 758 here against 1,115 with
//! moka, an invalidation 17k against 103k; moka is steadier only when misses
//! flood a full cache (about 6.8k per insert, against 5k to 12k here, by the
//! random seed), and each of those misses has already paid for a database
//! read.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use crate::db::Invalidation;

/// Shards keep 64 concurrent callers from queueing on one lock.
const SHARDS: usize = 16;

/// A cached value that knows which changes make it stale.
pub trait Invalidated {
    fn is_stale_after(&self, change: &Invalidation) -> bool;
}

/// A cached "does not exist" is never made stale by a change to something
/// that exists: only creating the very row could, and rows are created with
/// fresh random keys.
impl<T: Invalidated> Invalidated for Option<T> {
    fn is_stale_after(&self, change: &Invalidation) -> bool {
        self.as_ref()
            .is_some_and(|value| value.is_stale_after(change))
    }
}

impl<T: Invalidated> Invalidated for std::sync::Arc<T> {
    fn is_stale_after(&self, change: &Invalidation) -> bool {
        (**self).is_stale_after(change)
    }
}

#[derive(Clone)]
struct Entry<V> {
    value: V,
    cached_at: Instant,
}

/// The result of [`InvalidatedCache::get`].
pub enum Lookup<V> {
    /// Cached.
    Hit(V),
    /// Not cached: read the database, then [`InvalidatedCache::insert`] with
    /// this generation.
    Miss(u64),
}

/// A bounded, TTL'd map whose entries are dropped by [`Invalidation`]s.
pub struct InvalidatedCache<K, V> {
    shards: Vec<Mutex<HashMap<K, Entry<V>>>>,
    shard_of: RandomState,
    shard_capacity: usize,
    ttl: Duration,
    /// Bumped by every invalidation; see the module docs.
    generation: AtomicU64,
    /// False while invalidations could be missed (listener down) or when
    /// configured off.
    active: AtomicBool,
    /// Lookups answered from the cache, and not (a bypassed cache misses).
    hits: Counter,
    misses: Counter,
}

impl<K, V> InvalidatedCache<K, V>
where
    K: Hash + Eq + Copy,
    V: Clone + Invalidated,
{
    /// `capacity` 0 or `ttl` zero turns the cache off. It starts inactive;
    /// [`InvalidatedCache::activate`] turns it on once invalidations flow.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_of: RandomState::new(),
            shard_capacity: capacity.div_ceil(SHARDS),
            ttl,
            generation: AtomicU64::new(0),
            active: AtomicBool::new(false),
            hits: Counter::default(),
            misses: Counter::default(),
        }
    }

    /// Counts lookups in `hits` and `misses` (metrics the caller exports).
    pub fn counting_lookups(mut self, hits: Counter, misses: Counter) -> Self {
        self.hits = hits;
        self.misses = misses;
        self
    }

    fn enabled(&self) -> bool {
        self.shard_capacity > 0 && !self.ttl.is_zero()
    }

    fn shard(&self, key: &K) -> &Mutex<HashMap<K, Entry<V>>> {
        // Keyed by a per-process random seed, so nobody can aim keys at one shard.
        let index = self.shard_of.hash_one(key) as usize % SHARDS;
        &self.shards[index]
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

    pub fn get(&self, key: &K) -> Lookup<V> {
        // Read the generation first: an invalidation after this point makes
        // the caller's insert a no-op.
        let generation = self.generation.load(Ordering::Acquire);
        if !self.is_active() {
            self.misses.inc();
            return Lookup::Miss(generation);
        }
        let shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        match shard.get(key) {
            Some(entry) if entry.cached_at.elapsed() < self.ttl => {
                self.hits.inc();
                Lookup::Hit(entry.value.clone())
            }
            _ => {
                self.misses.inc();
                Lookup::Miss(generation)
            }
        }
    }

    /// Whether a live entry is cached under `key`, without counting a
    /// lookup (for a caller that must do more before it may serve it).
    pub fn contains(&self, key: &K) -> bool {
        self.is_active()
            && self
                .shard(key)
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(key)
                .is_some_and(|entry| entry.cached_at.elapsed() < self.ttl)
    }

    /// A lookup that does not ask the cache: counts a miss and returns the
    /// generation to [`InvalidatedCache::insert`] with.
    pub fn bypass(&self) -> u64 {
        let generation = self.generation.load(Ordering::Acquire);
        self.misses.inc();
        generation
    }

    /// Caches a lookup made after [`InvalidatedCache::get`] returned
    /// `Miss(generation)`, unless something was invalidated since.
    pub fn insert(&self, key: &K, value: V, generation: u64) {
        if !self.is_active() {
            return;
        }
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if shard.len() >= self.shard_capacity && !shard.contains_key(key) {
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
            *key,
            Entry {
                value,
                cached_at: Instant::now(),
            },
        );
    }

    /// Drops every entry the change made stale. Rare (a revoke, a delete, a
    /// logout), so a scan of the bounded cache is fine.
    pub fn invalidate(&self, change: &Invalidation) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|_, entry| !entry.value.is_stale_after(change));
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
    use crate::domain::{ApiKeyId, ChatbotId, UserId};

    /// A row owned by a user, in a chatbot, with an id.
    #[derive(Clone)]
    struct Row {
        id: ApiKeyId,
        chatbot: ChatbotId,
        owner: UserId,
    }

    impl Invalidated for Row {
        fn is_stale_after(&self, change: &Invalidation) -> bool {
            match *change {
                Invalidation::Key(id) => self.id == id,
                Invalidation::Chatbot(id) => self.chatbot == id,
                Invalidation::Owner(id) => self.owner == id,
                Invalidation::Session(_)
                | Invalidation::Organization(_)
                | Invalidation::ServiceAccount(_) => false,
            }
        }
    }

    type Cache = InvalidatedCache<u8, Option<Row>>;

    fn row(id: i64, chatbot: ChatbotId, owner: UserId) -> Option<Row> {
        Some(Row {
            id: ApiKeyId(id),
            chatbot,
            owner,
        })
    }

    fn active_cache() -> Cache {
        let cache = Cache::new(64, Duration::from_secs(60));
        cache.activate();
        cache
    }

    fn cache_miss(cache: &Cache, key: u8) -> u64 {
        match cache.get(&key) {
            Lookup::Miss(generation) => generation,
            Lookup::Hit(_) => panic!("expected a miss"),
        }
    }

    #[test]
    fn a_cached_row_is_served_until_a_change_makes_it_stale() {
        let (chatbot, owner) = (ChatbotId::generate(), UserId::generate());
        for change in [
            Invalidation::Key(ApiKeyId(1)),
            Invalidation::Chatbot(chatbot),
            Invalidation::Owner(owner),
        ] {
            let cache = active_cache();
            let generation = cache_miss(&cache, 1);
            cache.insert(&1, row(1, chatbot, owner), generation);
            assert!(matches!(cache.get(&1), Lookup::Hit(Some(_))));
            cache.invalidate(&Invalidation::Key(ApiKeyId(2)));
            assert!(matches!(cache.get(&1), Lookup::Hit(Some(_))));
            cache.invalidate(&change);
            cache_miss(&cache, 1);
        }
    }

    #[test]
    fn a_lookup_that_raced_an_invalidation_is_not_cached() {
        let cache = active_cache();
        let generation = cache_miss(&cache, 1);
        cache.invalidate(&Invalidation::Key(ApiKeyId(1)));
        let (chatbot, owner) = (ChatbotId::generate(), UserId::generate());
        cache.insert(&1, row(1, chatbot, owner), generation);
        cache_miss(&cache, 1);
    }

    #[test]
    fn an_inactive_or_disabled_cache_never_answers() {
        let (chatbot, owner) = (ChatbotId::generate(), UserId::generate());
        let inactive = Cache::new(64, Duration::from_secs(60));
        let generation = cache_miss(&inactive, 1);
        inactive.insert(&1, row(1, chatbot, owner), generation);
        cache_miss(&inactive, 1);

        let disabled = Cache::new(0, Duration::from_secs(60));
        disabled.activate();
        assert!(!disabled.is_active());
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = Cache::new(32, Duration::from_secs(60));
        cache.activate();
        for key in 0..=255u8 {
            let generation = cache_miss(&cache, key);
            cache.insert(&key, None, generation);
        }
        assert!(cache.len() <= 32, "{} entries", cache.len());
    }
}
