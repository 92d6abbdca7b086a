//! Keys' own limits counted in process (no Redis, or Redis not answering):
//! GCRA like governor's, but each key with its own quota, which its owner
//! sets and may change at any time. A change applies at the next call: the
//! calls already counted are re-timed at the new interval (as the Redis
//! script does), so a raised limit lets the next call through and a lowered
//! one refuses it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::ApiKeyId;

const SHARDS: usize = 16;

/// A key's theoretical arrival time (TAT) and the interval it was counted
/// at.
#[derive(Debug, Clone, Copy)]
struct Counted {
    tat: Instant,
    interval: Duration,
}

/// Each key's count, in shards to spread the locks.
pub struct OwnLimits {
    shards: [Mutex<HashMap<ApiKeyId, Counted>>; SHARDS],
}

impl Default for OwnLimits {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

impl OwnLimits {
    /// Allows a call counting `weight` if it leaves the key's TAT at most
    /// `burst` intervals ahead of now; a refused call changes nothing.
    pub fn check(
        &self,
        id: ApiKeyId,
        interval: Duration,
        burst: u32,
        weight: u32,
    ) -> Result<(), Duration> {
        let now = Instant::now();
        let capacity = interval.saturating_mul(burst);
        let mut shard = self.shard(id);
        let ahead = shard.get(&id).map_or(Duration::ZERO, |counted| {
            let ahead = counted.tat.saturating_duration_since(now);
            match counted.interval == interval {
                true => ahead,
                // Calls counted, times the new interval; a result out of
                // Duration's range is more than a full bucket anyway.
                false => Duration::try_from_secs_f64(
                    ahead.as_secs_f64() * interval.as_secs_f64() / counted.interval.as_secs_f64(),
                )
                .unwrap_or(capacity),
            }
        });
        let new_ahead = ahead.min(capacity) + interval.saturating_mul(weight);
        if new_ahead > capacity {
            return Err(new_ahead - capacity);
        }
        let tat = now + new_ahead;
        shard.insert(id, Counted { tat, interval });
        Ok(())
    }

    /// Forgets keys whose bucket is full again.
    pub fn sweep(&self) {
        let now = Instant::now();
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, counted| counted.tat > now);
        }
    }

    fn shard(&self, id: ApiKeyId) -> std::sync::MutexGuard<'_, HashMap<ApiKeyId, Counted>> {
        let index = usize::try_from(id.0.rem_euclid(SHARDS as i64)).unwrap_or(0);
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_one_interval() {
        let limits = OwnLimits::default();
        let id = ApiKeyId(7);
        let interval = Duration::from_secs(12);
        for _ in 0..5 {
            limits.check(id, interval, 5, 1).unwrap();
        }
        let wait = limits.check(id, interval, 5, 1).unwrap_err();
        assert!(
            wait > Duration::from_secs(11) && wait <= interval,
            "{wait:?}"
        );
        // Another key has its own bucket.
        limits.check(ApiKeyId(8), interval, 1, 1).unwrap();
    }

    #[test]
    fn a_raised_limit_lets_the_next_call_through_and_a_lowered_one_refuses_it() {
        let limits = OwnLimits::default();
        let day = Duration::from_secs(24 * 3600);
        let id = ApiKeyId(9);
        // 3 a day, all spent.
        for _ in 0..3 {
            limits.check(id, day / 3, 3, 1).unwrap();
        }
        limits.check(id, day / 3, 3, 1).unwrap_err();
        // Raised to 10 a day: 7 more, then refused.
        for call in 0..7 {
            limits
                .check(id, day / 10, 10, 1)
                .unwrap_or_else(|wait| panic!("call {call} refused for {wait:?}"));
        }
        limits.check(id, day / 10, 10, 1).unwrap_err();
        // Lowered back to 3 a day with 10 spent: refused.
        limits.check(id, day / 3, 3, 1).unwrap_err();
    }
}
