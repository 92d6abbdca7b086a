//! One scenario per run, so callgrind counts it alone: `hit` (gets of
//! 1,000 cached keys), `flood` (misses of unique keys, half of them past
//! the capacity), `invalidate` (invalidations by key id, each followed by a
//! get). Instruction counts, not seconds: repeatable on a busy machine.

/// The server's cache, unchanged; it names `crate::db::Invalidation`.
#[path = "../../../src/cache.rs"]
#[allow(dead_code)]
mod own;
mod db {
    pub use super::Invalidation;
}
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub enum Invalidation {
    Key(i64),
    Chatbot(u128),
    Owner(u128),
}

#[derive(Clone)]
pub struct Row {
    id: i64,
    chatbot: u128,
    owner: u128,
}
impl own::Invalidated for Row {
    fn is_stale_after(&self, c: &Invalidation) -> bool {
        match *c {
            Invalidation::Key(i) => self.id == i,
            Invalidation::Chatbot(i) => self.chatbot == i,
            Invalidation::Owner(i) => self.owner == i,
        }
    }
}
type V = Option<std::sync::Arc<Row>>;

/// moka plus the generation guard.
struct Moka {
    cache: moka::sync::Cache<[u8; 32], V>,
    generation: AtomicU64,
    guard: RwLock<()>,
}
impl Moka {
    fn new(cap: u64, ttl: Duration) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(cap)
                .time_to_live(ttl)
                .support_invalidation_closures()
                .build(),
            generation: AtomicU64::new(0),
            guard: RwLock::new(()),
        }
    }
    fn get(&self, k: &[u8; 32]) -> Result<V, u64> {
        let g = self.generation.load(Ordering::Acquire);
        self.cache.get(k).ok_or(g)
    }
    fn insert(&self, k: [u8; 32], v: V, g: u64) {
        let _r = self.guard.read().unwrap();
        if self.generation.load(Ordering::Acquire) == g {
            self.cache.insert(k, v);
        }
    }
    fn invalidate(&self, c: Invalidation) {
        let _w = self.guard.write().unwrap();
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache
            .invalidate_entries_if(move |_, v: &V| {
                v.as_ref()
                    .is_some_and(|r| own::Invalidated::is_stale_after(&**r, &c))
            })
            .unwrap();
    }
}

fn key(i: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k[8] = 7;
    k
}
fn row(i: u64) -> V {
    Some(std::sync::Arc::new(Row {
        id: i as i64,
        chatbot: (i / 5) as u128,
        owner: (i / 50) as u128,
    }))
}

fn main() {
    let which = std::env::args().nth(1).unwrap();
    let scenario = std::env::args().nth(2).unwrap();
    let n: u64 = std::env::args().nth(3).unwrap().parse().unwrap();
    let cap = 100_000usize;
    let ttl = Duration::from_secs(30);
    let mut hits = 0u64;
    match which.as_str() {
        "own" => {
            let c: own::InvalidatedCache<[u8; 32], V> = own::InvalidatedCache::new(cap, ttl);
            c.activate();
            for i in 0..1000 {
                if let own::Lookup::Miss(g) = c.get(&key(i)) {
                    c.insert(&key(i), row(i), g)
                }
            }
            match scenario.as_str() {
                "hit" => {
                    for i in 0..n {
                        if let own::Lookup::Hit(_) = c.get(&key(i % 1000)) {
                            hits += 1
                        }
                    }
                }
                "flood" => {
                    for i in 0..n {
                        match c.get(&key(1000 + i)) {
                            own::Lookup::Miss(g) => c.insert(&key(1000 + i), None, g),
                            _ => hits += 1,
                        }
                    }
                }
                "invalidate" => {
                    for i in 0..n {
                        c.invalidate(&Invalidation::Key((i % 1000) as i64));
                        if let own::Lookup::Hit(_) = c.get(&key(i % 1000)) {
                            hits += 1
                        }
                    }
                }
                _ => panic!(),
            }
        }
        "moka" => {
            let c = Moka::new(cap as u64, ttl);
            for i in 0..1000 {
                if let Err(g) = c.get(&key(i)) {
                    c.insert(key(i), row(i), g)
                }
            }
            match scenario.as_str() {
                "hit" => {
                    for i in 0..n {
                        if c.get(&key(i % 1000)).is_ok() {
                            hits += 1
                        }
                    }
                }
                "flood" => {
                    for i in 0..n {
                        match c.get(&key(1000 + i)) {
                            Err(g) => c.insert(key(1000 + i), None, g),
                            Ok(_) => hits += 1,
                        }
                    }
                }
                "invalidate" => {
                    for i in 0..n {
                        c.invalidate(Invalidation::Key((i % 1000) as i64));
                        if c.get(&key(i % 1000)).is_ok() {
                            hits += 1
                        }
                    }
                }
                _ => panic!(),
            }
        }
        _ => panic!(),
    }
    println!("{which} {scenario} n={n} hits={hits}");
}
