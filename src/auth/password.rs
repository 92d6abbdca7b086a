//! argon2id password hashing (by default OWASP's m=19456 KiB, t=2, p=1;
//! configurable, see [`HashCost`]) on a few dedicated threads of lower scheduling priority, so a flood of logins
//! cannot starve the async runtime or cheap RPCs: the hashes queue for the
//! threads, and when the process's CPU is contended the kernel runs the
//! runtime's threads first. Nice values compete only within a scheduling
//! group: a PostgreSQL on the same host in the same group also goes first;
//! a container's CPU quota is still shared by everything in it. The queue
//! is bounded ([`PasswordHasher::with_queue_limit`]): past it a call is
//! refused at once, RESOURCE_EXHAUSTED with a retry time, instead of
//! holding memory and a client's deadline for work that cannot start soon.
//! A caller with other work to do first (Login reads and writes the
//! database) claims its place with [`PasswordHasher::claim_slot`] before
//! that work, so a busy server refuses it before it costs anything.
//! Under a flood the threads also rest between hashes
//! ([`PasswordHasher::with_duty_percent`]): nice values do not reach a
//! PostgreSQL in another scheduling group, and a hashing thread busy all
//! the time would take CPU its backends need for the cheap RPCs.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::domain::Password;
use crate::error::{AppError, AppResult};

/// Hashes that may wait for a thread unless [`PasswordHasher::with_queue_limit`]
/// says otherwise.
pub const DEFAULT_MAX_QUEUED_HASHES: usize = 64;

/// What a refused call is told to wait: about what a queue of hashes takes
/// to drain on a few threads.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How much the hashing threads' nice value exceeds the process's (capped
/// at 19): at +10, a tenth of a normal thread's CPU share when both want a
/// core (CFS weight 110 against 1024), all of it when the core is idle.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
const HASH_THREAD_NICE: i32 = 10;

/// The share of its time a hashing thread hashes while hashes are waiting,
/// unless [`PasswordHasher::with_duty_percent`] says otherwise.
pub const DEFAULT_HASH_DUTY_PERCENT: u32 = 50;

type Job = Box<dyn FnOnce() + Send>;

/// A claimed place in the hashing queue: counted from the claim until its
/// hash starts, or until it is dropped unused.
#[must_use = "an unused slot is given back at once"]
pub struct HashSlot {
    queued: Arc<AtomicUsize>,
}

impl Drop for HashSlot {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The argon2id cost of new hashes: memory in KiB and passes over it, one
/// lane. A hash is a PHC string that carries its own parameters, so hashes
/// made at any cost keep verifying after the cost changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
}

impl HashCost {
    /// OWASP's recommendation for argon2id (Password Storage Cheat Sheet).
    pub const OWASP: Self = Self {
        memory_kib: 19_456,
        iterations: 2,
    };

    /// Whether either parameter is below [`HashCost::OWASP`]'s, as tests
    /// set them to keep the suite fast.
    pub fn is_below_owasp(self) -> bool {
        self.memory_kib < Self::OWASP.memory_kib || self.iterations < Self::OWASP.iterations
    }

    fn argon2(self) -> anyhow::Result<Argon2<'static>> {
        let params = Params::new(self.memory_kib, self.iterations, 1, None)
            .map_err(|e| anyhow::anyhow!("invalid argon2 parameters {self:?}: {e}"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl Default for HashCost {
    fn default() -> Self {
        Self::OWASP
    }
}

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct PasswordHasher {
    /// Work for the hashing threads; they exit when the last clone drops.
    jobs: mpsc::Sender<Job>,
    /// New hashes are made with this.
    argon2: Arc<Argon2<'static>>,
    /// A real hash of a random password, at the configured cost: verifying
    /// against it makes a login with an unknown email cost the same as one
    /// with a wrong password.
    /// Made by the hashing threads' first job, so neither start-up nor the
    /// async runtime pays for it; a verification that needs it sooner waits.
    dummy_hash: Arc<OnceLock<String>>,
    /// Jobs sent and not yet started, bounded by `max_queued`.
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    /// Counts calls refused because the queue was full.
    refusals: Counter,
    /// Percent of the time a thread hashes while more hashes wait (1..=100).
    duty_percent: Arc<AtomicU32>,
}

/// A PHC string of `secret` under a fresh salt.
fn hash_with_new_salt(argon2: &Argon2<'_>, secret: &[u8]) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2
        .hash_password(secret, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

fn new_dummy_hash(argon2: &Argon2<'_>) -> String {
    hash_with_new_salt(argon2, uuid::Uuid::new_v4().to_string().as_bytes())
        .expect("argon2 hashes a random password with validated parameters")
}

impl PasswordHasher {
    /// Starts `max_concurrent` hashing threads hashing at [`HashCost::OWASP`].
    pub fn new(max_concurrent: usize) -> anyhow::Result<Self> {
        Self::with_cost(max_concurrent, HashCost::OWASP)
    }

    /// Starts `max_concurrent` hashing threads hashing at `cost`; warns
    /// once when `cost` is below OWASP's recommendation.
    pub fn with_cost(max_concurrent: usize, cost: HashCost) -> anyhow::Result<Self> {
        let argon2 = Arc::new(cost.argon2()?);
        if cost.is_below_owasp() {
            tracing::warn!(
                memory_kib = cost.memory_kib,
                iterations = cost.iterations,
                "password hashes are cheaper than OWASP's recommendation \
                 (19456 KiB, 2 iterations); fine for tests, weak in production"
            );
        }
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let queued = Arc::new(AtomicUsize::new(0));
        let duty_percent = Arc::new(AtomicU32::new(DEFAULT_HASH_DUTY_PERCENT));
        for index in 0..max_concurrent.max(1) {
            let (queue, queued, duty_percent) =
                (queue.clone(), queued.clone(), duty_percent.clone());
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(job) = next else {
                            return;
                        };
                        let started = Instant::now();
                        // A panicking hash fails its caller, not the thread.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                        // Only under load: a lone hash's next one starts at once.
                        if queued.load(Ordering::Acquire) > 0 {
                            let duty = duty_percent.load(Ordering::Relaxed);
                            std::thread::sleep(rest_after(started.elapsed(), duty));
                        }
                    }
                })
                .context("starting a password hashing thread")?;
        }
        let dummy_hash = Arc::new(OnceLock::new());
        let (first_job, first_argon2) = (dummy_hash.clone(), argon2.clone());
        jobs.send(Box::new(move || {
            first_job.get_or_init(|| new_dummy_hash(&first_argon2));
        }))
        .ok()
        .context("the password hashing threads have stopped")?;
        Ok(Self {
            jobs,
            argon2,
            dummy_hash,
            queued,
            max_queued: DEFAULT_MAX_QUEUED_HASHES,
            refusals: Counter::default(),
            duty_percent,
        })
    }

    /// While hashes wait, each thread hashes `percent` of the time and
    /// rests the rest (100: never rests). Fewer logins a second under a
    /// flood, for more CPU left to everything else on the host.
    pub fn with_duty_percent(self, percent: u32) -> Self {
        self.duty_percent
            .store(percent.clamp(1, 100), Ordering::Relaxed);
        self
    }

    /// At most `max_queued` hashes wait for a thread; more are refused and
    /// counted in `refusals`.
    pub fn with_queue_limit(mut self, max_queued: usize, refusals: Counter) -> Self {
        self.max_queued = max_queued.max(1);
        self.refusals = refusals;
        self
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...` at the default cost).
    pub async fn hash(&self, password: Password) -> AppResult<String> {
        let argon2 = self.argon2.clone();
        self.run_on_hashing_thread(self.claim_slot()?, move || {
            hash_with_new_salt(&argon2, password.expose().as_bytes())
        })
        .instrument(tracing::debug_span!("password.hash"))
        .await
    }

    /// Whether `hash` was made with other settings than new hashes are
    /// (another algorithm, version or cost), so that a login that has just
    /// checked it should store a new one. A hash that does not parse is
    /// not this function's to judge: [`Self::verify`] reports it.
    pub fn is_outdated(&self, hash: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let current = self.argon2.params();
        let same_cost = Params::try_from(&parsed).is_ok_and(|params| {
            (params.m_cost(), params.t_cost(), params.p_cost())
                == (current.m_cost(), current.t_cost(), current.p_cost())
        });
        parsed.algorithm != Algorithm::Argon2id.ident()
            || parsed.version != Some(Version::V0x13 as u32)
            || !same_cost
    }

    /// Whether `password` matches `hash`; with `None`, spends the same work
    /// on the dummy hash and answers false.
    pub async fn verify(&self, password: Password, hash: Option<String>) -> AppResult<bool> {
        self.verify_in(self.claim_slot()?, password, hash).await
    }

    /// [`Self::verify`] in a place claimed earlier.
    pub async fn verify_in(
        &self,
        slot: HashSlot,
        password: Password,
        hash: Option<String>,
    ) -> AppResult<bool> {
        let known = hash.is_some();
        let (dummy_hash, argon2) = (self.dummy_hash.clone(), self.argon2.clone());
        let matches = self
            .run_on_hashing_thread(slot, move || {
                let hash = match &hash {
                    Some(hash) => hash.as_str(),
                    None => dummy_hash.get_or_init(|| new_dummy_hash(&argon2)),
                };
                let parsed = PasswordHash::new(hash)
                    .map_err(|e| anyhow::anyhow!("stored password hash is invalid: {e}"))?;
                // The parameters come from the hash itself, whatever the
                // configured cost was when it was made.
                Ok(argon2
                    .verify_password(password.expose().as_bytes(), &parsed)
                    .is_ok())
            })
            .instrument(tracing::debug_span!("password.verify"))
            .await?;
        Ok(known && matches)
    }

    /// A place in the hashing queue, or RESOURCE_EXHAUSTED (counted) when
    /// it is full.
    pub fn claim_slot(&self) -> AppResult<HashSlot> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.refusals.inc();
            return Err(AppError::ResourceExhausted {
                message: "the server is busy hashing passwords; retry later".into(),
                retry_after: BUSY_RETRY_AFTER,
            });
        }
        Ok(HashSlot {
            queued: self.queued.clone(),
        })
    }

    async fn run_on_hashing_thread<T: Send + 'static>(
        &self,
        slot: HashSlot,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> AppResult<T> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                // Started: the place is free for the next caller.
                drop(slot);
                // A caller that gave up while queued (deadline, cancel) would
                // waste a hash; skip it.
                if !reply.is_closed() {
                    let _ = reply.send(work());
                }
            }))
            .ok()
            .context("the password hashing threads have stopped")
            .map_err(AppError::Internal)?;
        answer
            .await
            .context("password hashing panicked")
            .and_then(|answer| answer)
            .map_err(AppError::Internal)
    }
}

/// How long a thread that has just hashed for `hashed` rests, so that it
/// hashes `duty_percent` of the time.
fn rest_after(hashed: Duration, duty_percent: u32) -> Duration {
    let duty = duty_percent.clamp(1, 100);
    hashed * (100 - duty) / duty
}

/// Raises this thread's nice value by [`HASH_THREAD_NICE`]. On Linux the
/// nice value is per thread, so the runtime's threads keep theirs.
fn lower_this_threads_priority() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: gettid, getpriority and setpriority take no pointers;
        // raising one's own nice value needs no privilege.
        let result = unsafe {
            let thread = libc::gettid() as libc::id_t;
            let current = libc::getpriority(libc::PRIO_PROCESS, thread);
            libc::setpriority(
                libc::PRIO_PROCESS,
                thread,
                (current + HASH_THREAD_NICE).min(19),
            )
        };
        if result != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "could not lower the password hashing thread's priority"
            );
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn this_threads_nice() -> i32 {
        // SAFETY: no pointers; -1 is also a valid nice value, which errno
        // would tell apart, but these tests never run at -1.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn a_thread_rests_so_that_it_hashes_its_duty_share_of_the_time() {
        let hashed = Duration::from_millis(40);
        assert_eq!(rest_after(hashed, 100), Duration::ZERO);
        assert_eq!(rest_after(hashed, 50), hashed);
        assert_eq!(rest_after(hashed, 25), hashed * 3);
        // Out of range is clamped, never a division by zero.
        assert_eq!(rest_after(hashed, 0), hashed * 99);
        assert_eq!(rest_after(hashed, 500), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_hash_made_at_another_cost_is_outdated_and_one_made_now_is_not() {
        let cheap = HashCost {
            memory_kib: 8,
            iterations: 1,
        };
        let old = PasswordHasher::with_cost(1, cheap).unwrap();
        let new = PasswordHasher::with_cost(1, HashCost::OWASP).unwrap();
        let password = Password::parse("password", "correct-horse-battery".into()).unwrap();
        let old_hash = old.hash(password.clone()).await.unwrap();
        let new_hash = new.hash(password).await.unwrap();
        assert!(new.is_outdated(&old_hash));
        assert!(!new.is_outdated(&new_hash));
        assert!(!old.is_outdated(&old_hash));
        assert!(!new.is_outdated("not a PHC string"));
    }

    #[tokio::test]
    async fn hashes_run_on_threads_of_lower_priority_than_the_runtime() {
        let hasher = PasswordHasher::new(1).unwrap();
        let runtime_nice = this_threads_nice();
        let hashing_nice = hasher
            .run_on_hashing_thread(hasher.claim_slot().unwrap(), || Ok(this_threads_nice()))
            .await
            .unwrap();
        assert_eq!(hashing_nice, (runtime_nice + HASH_THREAD_NICE).min(19));
        assert_eq!(this_threads_nice(), runtime_nice);
    }

    #[tokio::test]
    async fn without_a_stored_hash_the_dummy_is_verified_and_nothing_matches() {
        let hasher = PasswordHasher::new(2).unwrap();
        let password = Password::parse("password", "a long enough password".into()).unwrap();
        assert!(!hasher.verify(password.clone(), None).await.unwrap());
        let dummy = hasher
            .dummy_hash
            .get()
            .expect("made by the first job")
            .clone();
        assert!(dummy.starts_with("$argon2id$"));
        // Made once, whichever thread needed it first.
        assert!(!hasher.verify(password, None).await.unwrap());
        assert_eq!(hasher.dummy_hash.get(), Some(&dummy));
    }

    const CHEAPEST: HashCost = HashCost {
        memory_kib: 8,
        iterations: 1,
    };

    #[tokio::test]
    async fn hashes_carry_their_cost_and_verify_whatever_the_configured_cost() {
        let cheap = PasswordHasher::with_cost(1, CHEAPEST).unwrap();
        let owasp = PasswordHasher::new(1).unwrap();
        let password = Password::parse("password", "a long enough password".into()).unwrap();
        let wrong = Password::parse("password", "another long password".into()).unwrap();

        let cheap_hash = cheap.hash(password.clone()).await.unwrap();
        assert!(
            cheap_hash.starts_with("$argon2id$v=19$m=8,t=1,p=1$"),
            "{cheap_hash}"
        );
        let owasp_hash = owasp.hash(password.clone()).await.unwrap();
        assert!(
            owasp_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{owasp_hash}"
        );

        for hasher in [&cheap, &owasp] {
            for hash in [&cheap_hash, &owasp_hash] {
                assert!(hasher
                    .verify(password.clone(), Some(hash.clone()))
                    .await
                    .unwrap());
                assert!(!hasher
                    .verify(wrong.clone(), Some(hash.clone()))
                    .await
                    .unwrap());
            }
        }
    }

    #[tokio::test]
    async fn the_dummy_hash_costs_what_a_real_one_costs() {
        let hasher = PasswordHasher::with_cost(1, CHEAPEST).unwrap();
        let password = Password::parse("password", "a long enough password".into()).unwrap();
        assert!(!hasher.verify(password, None).await.unwrap());
        let dummy = hasher.dummy_hash.get().expect("made by the first job");
        assert!(dummy.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{dummy}");
    }

    #[test]
    fn a_cost_below_argon2s_minimum_is_refused_and_only_below_owasp_is_flagged() {
        let too_little_memory = HashCost {
            memory_kib: 7,
            iterations: 1,
        };
        assert!(PasswordHasher::with_cost(1, too_little_memory).is_err());
        assert!(CHEAPEST.is_below_owasp());
        assert!(!HashCost::OWASP.is_below_owasp());
        assert_eq!(HashCost::default(), HashCost::OWASP);
    }

    #[tokio::test]
    async fn a_hash_that_panics_fails_its_caller_and_the_thread_keeps_working() {
        let hasher = PasswordHasher::new(1).unwrap();
        let failed = hasher
            .run_on_hashing_thread(hasher.claim_slot().unwrap(), || -> anyhow::Result<()> {
                panic!("boom")
            });
        assert!(failed.await.is_err());
        let password = Password::parse("password", "a long enough password".into()).unwrap();
        let hash = hasher.hash(password.clone()).await.unwrap();
        assert!(hasher.verify(password, Some(hash)).await.unwrap());
    }
}
