//! Which keys exist, known in memory, so that a well-formed key that does
//! not exist is answered "not found" without a query. A gateway passes on
//! whatever keys its clients send; without this, a flood of made-up keys
//! would reach the database once per call.
//!
//! The set holds a 64-bit fingerprint (the first 8 bytes of the SHA-256
//! digest) of every key in the store. It is loaded from the store once the
//! listener hears every change, kept current by the notification a trigger
//! sends for every key inserted (by any replica, of any version), and
//! rebuilt every [`REBUILD_INTERVAL`] so that deleted keys leave it.
//!
//! A fingerprint in the set only means "look it up": the store decides.
//! A fingerprint missing from it means "no such key" only when that cannot
//! be news that has not arrived yet, which is the subtle part. A key
//! created on another replica moments ago is in the store but its
//! announcement may still be on its way. So, for a key not in the set:
//!
//! - A key of the current format carries its issue time
//!   ([`crate::domain::ApiKeySecret::issued_at`]). The listener's heartbeats
//!   tell when it last heard everything committed ([`KnownKeys::synced`]):
//!   a key issued more than [`ISSUE_MARGIN`] before that (or claiming to be
//!   issued more than that margin in the future) would have been heard of:
//!   it does not exist, and no query is made.
//! - Any other key (issued recently, or of the earlier format) waits for a
//!   *barrier*: the listener sends itself a notification and waits for it
//!   to come back, which proves every commit before it has been heard.
//!   Every key that arrives while one barrier is out shares the next, so a
//!   flood of such keys costs one `NOTIFY` per round trip, not one query
//!   per key.
//!
//! Whenever the listener may have missed a notification (connecting,
//! reconnecting, a heartbeat overdue) the set is not trusted and every
//! unknown key is looked up, as before. SQLite has no other replica and no
//! listener: there every key is looked up.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::db::models::ApiKey;
use crate::db::{BarrierRequest, Database};
use crate::domain::ApiKeyDigest;

/// How long a key may take from being issued to being committed, plus
/// clock skew between replicas: a key issued earlier than this before the
/// last sync would have been announced.
pub const ISSUE_MARGIN: Duration = Duration::from_secs(300);

/// How often the set is rebuilt from the store, dropping deleted keys.
pub const REBUILD_INTERVAL: Duration = Duration::from_secs(3600);

/// How long a key waits for its barrier before it is looked up instead.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(1);

/// Barrier requests waiting for the listener; past this a key is looked up.
const BARRIER_QUEUE: usize = 4096;

/// The first 8 bytes of a key's SHA-256 digest.
fn fingerprint(digest: &ApiKeyDigest) -> u64 {
    let mut first = [0; 8];
    first.copy_from_slice(&digest.0[..8]);
    u64::from_be_bytes(first)
}

/// Fingerprints are already uniform: hashing them again is wasted work.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8) | u64::from(byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type Fingerprints = HashSet<u64, BuildHasherDefault<IdentityHasher>>;

/// What [`KnownKeys::presence`] can say without the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Certainly no such key.
    Absent,
    /// Ask the store.
    LookUp,
}

struct Fingerprinted {
    set: Fingerprints,
    /// While a rebuild loads, the announcements that arrive meanwhile, to
    /// add to the loaded set.
    arriving: Option<Vec<u64>>,
}

/// The set, and whether it can be trusted. Shared by the verifier, the
/// listener's handler and the task that loads it.
pub struct KnownKeys {
    keys: RwLock<Fingerprinted>,
    /// Whether the listener hears every change (between its `Listening`
    /// and its `Lost`).
    listening: AtomicBool,
    /// True once loaded while listening; false from the moment the
    /// listener may have missed something.
    trusted: AtomicBool,
    /// Bumped every time the listener may have missed something, so that
    /// a load or barrier that began before cannot vouch for after.
    epoch: AtomicU64,
    /// Unix milliseconds: every key committed before this was announced
    /// here (the send time of the latest heartbeat heard back).
    synced_ms: AtomicI64,
    barriers: Option<mpsc::Sender<BarrierRequest>>,
    reload: Notify,
}

impl KnownKeys {
    /// A set that is never trusted: every unknown key is looked up (SQLite).
    pub fn disabled() -> Arc<Self> {
        Arc::new(Self::new(None))
    }

    /// A set for PostgreSQL's replicas, trusted once
    /// [`Self::keep_loaded`] has loaded it while the listener hears every
    /// change; its barriers go to the listener through the receiver.
    pub fn for_replicas() -> (Arc<Self>, mpsc::Receiver<BarrierRequest>) {
        let (barriers, requests) = mpsc::channel(BARRIER_QUEUE);
        (Arc::new(Self::new(Some(barriers))), requests)
    }

    fn new(barriers: Option<mpsc::Sender<BarrierRequest>>) -> Self {
        Self {
            keys: RwLock::new(Fingerprinted {
                set: Fingerprints::default(),
                arriving: None,
            }),
            listening: AtomicBool::new(false),
            trusted: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            synced_ms: AtomicI64::new(i64::MIN),
            barriers,
            reload: Notify::new(),
        }
    }

    /// Whether the key with `digest`, issued at `issued_at` (Unix seconds,
    /// `None` for the earlier format), certainly does not exist; may wait
    /// for a barrier (see the module's doc).
    pub async fn presence(&self, digest: &ApiKeyDigest, issued_at: Option<i64>) -> Presence {
        let print = fingerprint(digest);
        let epoch = self.epoch.load(Ordering::Acquire);
        if !self.trusted.load(Ordering::Acquire) || self.contains(print) {
            return Presence::LookUp;
        }
        if let Some(issued_at) = issued_at {
            let margin_ms = ISSUE_MARGIN.as_millis() as i64;
            let issued_ms = issued_at.saturating_mul(1000);
            let synced_ms = self.synced_ms.load(Ordering::Acquire);
            let now_ms = chrono::Utc::now().timestamp_millis();
            // Trusted and not in the set, just read: nothing more to wait for.
            if issued_ms.saturating_add(margin_ms) < synced_ms
                || issued_ms > now_ms.saturating_add(margin_ms)
            {
                return Presence::Absent;
            }
        }
        if !self.barrier().await {
            return Presence::LookUp;
        }
        self.vouched(print, epoch)
    }

    /// `Absent` if the set, trusted throughout since `epoch`, still lacks
    /// `print`.
    fn vouched(&self, print: u64, epoch: u64) -> Presence {
        let trusted = self.trusted.load(Ordering::Acquire)
            && self.epoch.load(Ordering::Acquire) == epoch
            && !self.contains(print);
        if trusted {
            Presence::Absent
        } else {
            Presence::LookUp
        }
    }

    fn contains(&self, print: u64) -> bool {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .set
            .contains(&print)
    }

    /// Waits for a barrier: true once every notification committed before
    /// this call has been heard and applied; false if none could be had in
    /// time (or there is no listener). ListChatbots' cached pages wait for
    /// one too ([`super::chatbot_pages`]).
    pub async fn barrier(&self) -> bool {
        let Some(barriers) = &self.barriers else {
            return false;
        };
        let (answer, heard) = oneshot::channel();
        if barriers.try_send(answer).is_err() {
            return false;
        }
        matches!(
            tokio::time::timeout(BARRIER_TIMEOUT, heard).await,
            Ok(Ok(()))
        )
    }

    /// A key's announcement (the hex fingerprint a trigger sends).
    pub fn announced(&self, payload: &str) {
        let Ok(print) = u64::from_str_radix(payload, 16) else {
            // Not ours to read: trust nothing until a reload has it.
            self.untrust();
            self.reload.notify_one();
            return;
        };
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        keys.set.insert(print);
        if let Some(arriving) = &mut keys.arriving {
            arriving.push(print);
        }
    }

    /// The listener hears every change from now on: (re)load the set.
    pub fn listening(&self) {
        self.listening.store(true, Ordering::Release);
        self.reload.notify_one();
    }

    /// The listener may have missed something: trust nothing until a load
    /// that starts after it hears again.
    pub fn lost(&self) {
        self.listening.store(false, Ordering::Release);
        self.untrust();
    }

    fn untrust(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.trusted.store(false, Ordering::Release);
    }

    /// Every key committed before `sent_ms` (Unix milliseconds, when a
    /// heartbeat that has now come back was sent) has been announced.
    pub fn synced(&self, sent_ms: i64) {
        self.synced_ms.fetch_max(sent_ms, Ordering::AcqRel);
    }

    /// Whether unknown keys are answered from the set (for tests).
    pub fn is_trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    /// Loads the set when the listener starts hearing, and again every
    /// [`REBUILD_INTERVAL`], until `stop`; retries a failed load after a
    /// second.
    pub async fn keep_loaded(self: Arc<Self>, db: Database, mut stop: watch::Receiver<bool>) {
        let mut retry = false;
        loop {
            let wait = if retry {
                Duration::from_secs(1)
            } else {
                REBUILD_INTERVAL
            };
            tokio::select! {
                _ = self.reload.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            let load = self.start_load();
            let loaded = async {
                let mut conn = db.conn().await?;
                anyhow::Ok(ApiKey::digest_fingerprints(&mut conn).await?)
            }
            .await;
            retry = loaded.is_err();
            match loaded {
                Ok(prints) => self.finish_load(load, prints),
                Err(error) => {
                    self.keys
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .arriving = None;
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "could not load the known API keys; looking every unknown key up until it loads"
                    );
                }
            }
        }
    }

    /// A load begins: announcements from now on are kept for it. Returns
    /// the epoch it may vouch for, if the listener hears every change now
    /// (a rebuild while it does not still drops deleted keys, but cannot
    /// restore trust: only the load after its next `Listening` can).
    fn start_load(&self) -> Option<u64> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let listening = self.listening.load(Ordering::Acquire);
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .arriving = Some(Vec::new());
        listening.then_some(epoch)
    }

    /// A load that [`Self::start_load`] began read `prints`: they, and the
    /// announcements since, become the set, trusted if nothing may have
    /// been missed meanwhile.
    fn finish_load(&self, load: Option<u64>, prints: Vec<i64>) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let mut set: Fingerprints = prints.into_iter().map(|print| print as u64).collect();
        set.extend(keys.arriving.take().unwrap_or_default());
        keys.set = set;
        let count = keys.set.len();
        drop(keys);
        let vouches = load.is_some_and(|epoch| {
            self.listening.load(Ordering::Acquire) && self.epoch.load(Ordering::Acquire) == epoch
        });
        if vouches && !self.trusted.swap(true, Ordering::AcqRel) {
            tracing::info!(
                keys = count,
                "loaded the known API keys; unknown keys are answered without a query"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(first: u8) -> ApiKeyDigest {
        ApiKeyDigest([first; 32])
    }

    fn trusted(known: &KnownKeys, synced_ms: i64) {
        known.listening();
        let load = known.start_load();
        known.finish_load(load, Vec::new());
        assert!(known.is_trusted());
        known.synced(synced_ms);
    }

    #[tokio::test]
    async fn only_a_trusted_set_vouches_and_only_for_keys_issued_well_before_its_sync() {
        let known = KnownKeys::new(None);
        let now = chrono::Utc::now().timestamp();
        let long_ago = Some(now - 86_400);
        assert_eq!(known.presence(&digest(1), long_ago).await, Presence::LookUp);
        trusted(&known, now * 1000);
        assert_eq!(known.presence(&digest(1), long_ago).await, Presence::Absent);
        let far_future = Some(now + 86_400);
        assert_eq!(
            known.presence(&digest(1), far_future).await,
            Presence::Absent
        );
        // Issued just now, or of the earlier format: a barrier is needed,
        // and without a listener there is none.
        assert_eq!(
            known.presence(&digest(1), Some(now)).await,
            Presence::LookUp
        );
        assert_eq!(known.presence(&digest(1), None).await, Presence::LookUp);
        // An announced key is looked up.
        known.announced(&format!("{:016x}", fingerprint(&digest(2))));
        assert_eq!(known.presence(&digest(2), long_ago).await, Presence::LookUp);
        // After a possible miss nothing is vouched for.
        known.lost();
        assert_eq!(known.presence(&digest(1), long_ago).await, Presence::LookUp);
    }

    #[tokio::test]
    async fn a_barrier_vouches_for_recent_keys_and_a_lost_one_does_not() {
        let (barriers, mut requests) = mpsc::channel(4);
        let known = Arc::new(KnownKeys::new(Some(barriers)));
        trusted(&known, chrono::Utc::now().timestamp_millis());
        let now = chrono::Utc::now().timestamp();
        let answering = tokio::spawn(async move {
            let first: BarrierRequest = requests.recv().await.unwrap();
            first.send(()).unwrap();
            // The second is dropped: the listener failed.
            let second = requests.recv().await.unwrap();
            drop(second);
        });
        assert_eq!(
            known.presence(&digest(3), Some(now)).await,
            Presence::Absent
        );
        assert_eq!(known.presence(&digest(3), None).await, Presence::LookUp);
        answering.await.unwrap();
    }

    #[test]
    fn a_garbled_announcement_distrusts_the_set_until_a_reload() {
        let known = KnownKeys::new(None);
        trusted(&known, 0);
        known.announced("not hex");
        assert!(!known.is_trusted());
        // The listener still hears: the reload it asked for restores trust.
        let load = known.start_load();
        known.finish_load(load, Vec::new());
        assert!(known.is_trusted());
    }

    #[test]
    fn only_a_load_begun_and_ended_while_listening_without_a_miss_vouches() {
        let known = KnownKeys::new(None);
        // Loaded before the listener hears (or an hourly rebuild while it
        // is lost): deleted keys leave, trust does not come back.
        let load = known.start_load();
        known.finish_load(load, vec![7]);
        assert!(!known.is_trusted());
        trusted(&known, 0);
        known.lost();
        let load = known.start_load();
        known.finish_load(load, Vec::new());
        assert!(!known.is_trusted(), "rebuilt while lost");
        // A load the listener was lost during does not vouch either, even
        // if it hears again before the load ends.
        known.listening();
        let load = known.start_load();
        known.lost();
        known.listening();
        known.finish_load(load, Vec::new());
        assert!(
            !known.is_trusted(),
            "something may have been missed mid-load"
        );
        let load = known.start_load();
        // Announced while loading: kept, though the load did not read it.
        known.announced(&format!("{:016x}", fingerprint(&digest(9))));
        known.finish_load(load, Vec::new());
        assert!(known.is_trusted());
        assert!(known.contains(fingerprint(&digest(9))));
    }
}
