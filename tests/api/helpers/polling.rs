//! Waiting for an answer to change: counts that arrive with a flush, a
//! cache that hears of a change made through another replica. Each wait
//! is for a condition, with a limit only so that a broken promise fails.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Calls `read` every `every` until `accepted` takes its answer, and
/// returns that answer; panics, naming `awaited` and the last answer, if
/// none is taken within `within`.
pub async fn poll_until<T, Fut>(
    awaited: &str,
    within: Duration,
    every: Duration,
    mut read: impl FnMut() -> Fut,
    mut accepted: impl FnMut(&T) -> bool,
) -> T
where
    T: Debug,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + within;
    loop {
        let answer = read().await;
        if accepted(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{awaited}: still {answer:?} after {within:?}"
        );
        tokio::time::sleep(every).await;
    }
}

/// After a change made through one replica (a revoke, a logout, a
/// demotion), polls `read` on another every 20 ms until `changed` takes
/// its answer, which the invalidation promise says comes within a second;
/// returns that answer.
pub async fn changed_within_a_second<T, Fut>(
    read: impl FnMut() -> Fut,
    changed: impl FnMut(&T) -> bool,
) -> T
where
    T: Debug,
    Fut: Future<Output = T>,
{
    poll_until(
        "the other replica has not seen the change",
        Duration::from_secs(1),
        Duration::from_millis(20),
        read,
        changed,
    )
    .await
}

/// Polls `read` every 100 ms until it gives `expected` (counts that arrive
/// with a flush), failing after ten seconds with the last value read.
pub async fn eventually<T, Fut>(expected: T, read: impl FnMut() -> Fut) -> T
where
    T: PartialEq + Debug,
    Fut: Future<Output = T>,
{
    poll_until(
        &format!("waiting for {expected:?}"),
        Duration::from_secs(10),
        Duration::from_millis(100),
        read,
        |value| *value == expected,
    )
    .await
}
