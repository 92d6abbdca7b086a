//! Keys' own limits counted in process (no Redis, or Redis not answering):
//! GCRA like governor's, but each key with its own quota, which its owner
//! sets and may change at any time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::ApiKeyId;

const SHARDS: usize = 16;

/// Each key's theoretical arrival time (TAT), in shards to spread the locks.
pub struct OwnLimits {
    shards: [Mutex<HashMap<ApiKeyId, Instant>>; SHARDS],
}

impl Default for OwnLimits {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

impl OwnLimits {
    /// Allows a call if it leaves the key's TAT at most `burst` intervals
    /// ahead of now; a refused call changes nothing.
    pub fn check(&self, id: ApiKeyId, interval: Duration, burst: u32) -> Result<(), Duration> {
        let now = Instant::now();
        let mut shard = self.shard(id);
        let tat = shard.get(&id).copied().unwrap_or(now).max(now);
        let new_tat = tat + interval;
        let allowed_from = new_tat.checked_sub(interval * burst).unwrap_or(now);
        if allowed_from > now {
            return Err(allowed_from - now);
        }
        shard.insert(id, new_tat);
        Ok(())
    }

    /// Forgets keys whose bucket is full again.
    pub fn sweep(&self) {
        let now = Instant::now();
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, tat| *tat > now);
        }
    }

    fn shard(&self, id: ApiKeyId) -> std::sync::MutexGuard<'_, HashMap<ApiKeyId, Instant>> {
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
            limits.check(id, interval, 5).unwrap();
        }
        let wait = limits.check(id, interval, 5).unwrap_err();
        assert!(
            wait > Duration::from_secs(11) && wait <= interval,
            "{wait:?}"
        );
        // Another key has its own bucket.
        limits.check(ApiKeyId(8), interval, 1).unwrap();
    }
}
