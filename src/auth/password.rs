//! argon2id password hashing (OWASP: m=19456 KiB, t=2, p=1) on a few
//! dedicated threads of lower scheduling priority, so a flood of logins
//! cannot starve the async runtime or cheap RPCs: the hashes queue for the
//! threads, and when the process's CPU is contended the kernel runs the
//! runtime's threads first. Nice values compete only within a scheduling
//! group: a PostgreSQL on the same host in the same group also goes first;
//! a container's CPU quota is still shared by everything in it.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::oneshot;

use crate::domain::Password;

/// How much the hashing threads' nice value exceeds the process's (capped
/// at 19): at +10, a tenth of a normal thread's CPU share when both want a
/// core (CFS weight 110 against 1024), all of it when the core is idle.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
const HASH_THREAD_NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct PasswordHasher {
    /// Work for the hashing threads; they exit when the last clone drops.
    jobs: mpsc::Sender<Job>,
    /// A real hash of a random password: verifying against it makes a login
    /// with an unknown email cost the same as one with a wrong password.
    /// Made by the hashing threads' first job, so neither start-up nor the
    /// async runtime pays for it; a verification that needs it sooner waits.
    dummy_hash: Arc<OnceLock<String>>,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(19_456, 2, 1, None).expect("OWASP argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A PHC string of `secret` under a fresh salt.
fn hash_with_new_salt(secret: &[u8]) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2()
        .hash_password(secret, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

fn new_dummy_hash() -> String {
    hash_with_new_salt(uuid::Uuid::new_v4().to_string().as_bytes())
        .expect("argon2 hashes a random password with valid parameters")
}

impl PasswordHasher {
    /// Starts `max_concurrent` hashing threads.
    pub fn new(max_concurrent: usize) -> anyhow::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..max_concurrent.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match next {
                            // A panicking hash fails its caller, not the thread.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                            }
                            Err(mpsc::RecvError) => return,
                        }
                    }
                })
                .context("starting a password hashing thread")?;
        }
        let dummy_hash = Arc::new(OnceLock::new());
        let first_job = dummy_hash.clone();
        jobs.send(Box::new(move || {
            first_job.get_or_init(new_dummy_hash);
        }))
        .ok()
        .context("the password hashing threads have stopped")?;
        Ok(Self { jobs, dummy_hash })
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`).
    pub async fn hash(&self, password: Password) -> anyhow::Result<String> {
        self.run_on_hashing_thread(move || hash_with_new_salt(password.expose().as_bytes()))
            .await
    }

    /// Whether `password` matches `hash`; with `None`, spends the same work
    /// on the dummy hash and answers false.
    pub async fn verify(&self, password: Password, hash: Option<String>) -> anyhow::Result<bool> {
        let known = hash.is_some();
        let dummy_hash = self.dummy_hash.clone();
        let matches = self
            .run_on_hashing_thread(move || {
                let hash = match &hash {
                    Some(hash) => hash.as_str(),
                    None => dummy_hash.get_or_init(new_dummy_hash),
                };
                let parsed = PasswordHash::new(hash)
                    .map_err(|e| anyhow::anyhow!("stored password hash is invalid: {e}"))?;
                Ok(argon2()
                    .verify_password(password.expose().as_bytes(), &parsed)
                    .is_ok())
            })
            .await?;
        Ok(known && matches)
    }

    async fn run_on_hashing_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                // A caller that gave up while queued (deadline, cancel) would
                // waste a hash; skip it.
                if !reply.is_closed() {
                    let _ = reply.send(work());
                }
            }))
            .ok()
            .context("the password hashing threads have stopped")?;
        answer.await.context("password hashing panicked")?
    }
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

    #[tokio::test]
    async fn hashes_run_on_threads_of_lower_priority_than_the_runtime() {
        let hasher = PasswordHasher::new(1).unwrap();
        let runtime_nice = this_threads_nice();
        let hashing_nice = hasher
            .run_on_hashing_thread(|| Ok(this_threads_nice()))
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

    #[tokio::test]
    async fn a_hash_that_panics_fails_its_caller_and_the_thread_keeps_working() {
        let hasher = PasswordHasher::new(1).unwrap();
        let failed = hasher.run_on_hashing_thread(|| -> anyhow::Result<()> { panic!("boom") });
        assert!(failed.await.is_err());
        let password = Password::parse("password", "a long enough password".into()).unwrap();
        let hash = hasher.hash(password.clone()).await.unwrap();
        assert!(hasher.verify(password, Some(hash)).await.unwrap());
    }
}
