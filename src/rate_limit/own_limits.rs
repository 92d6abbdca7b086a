//! Keys' own limits counted in process (no Redis, or Redis not answering):
//! GCRA like governor's, but each key with its own quota, which its owner
//! sets and may change at any time. A change applies at the next call: the
//! calls already counted are re-timed at the new interval (as the Redis
//! script does), so a raised limit lets the next call through and a lowered
//! one refuses it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::RateKey;

const SHARDS: usize = 16;

/// A key's theoretical arrival time (TAT) and the interval it was counted
/// at.
#[derive(Debug, Clone, Copy)]
struct Counted {
    tat: Instant,
    interval: Duration,
}

/// Each key's (or organization's) count, in shards to spread the locks.
pub struct OwnLimits {
    shards: [Mutex<HashMap<RateKey, Counted>>; SHARDS],
}

impl Default for OwnLimits {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

/// One bucket a call must fit: whose, its quota, and what the call counts.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    pub key: RateKey,
    pub interval: Duration,
    pub burst: u32,
    pub weight: u32,
}

impl OwnLimits {
    /// Allows a call counting `weight` if it leaves the key's TAT at most
    /// `burst` intervals ahead of now; a refused call changes nothing.
    #[cfg(test)]
    pub fn check(
        &self,
        key: RateKey,
        interval: Duration,
        burst: u32,
        weight: u32,
    ) -> Result<(), Duration> {
        let bucket = Bucket {
            key,
            interval,
            burst,
            weight,
        };
        self.check_all(&[bucket]).map_err(|(wait, _)| wait)
    }

    /// Allows a call only if it fits every bucket (each as
    /// [`check`](Self::check) judges it); a refused call changes none.
    /// Refused: the wait and which bucket refused (the first that does).
    pub fn check_all(&self, buckets: &[Bucket]) -> Result<(), (Duration, usize)> {
        let now = Instant::now();
        if let [bucket] = buckets {
            // The common case (a key's own limit alone): one lock, nothing
            // allocated.
            let mut shard = self.shard(bucket.key);
            let tat = next_tat(shard.get(&bucket.key), bucket, now).map_err(|wait| (wait, 0))?;
            shard.insert(bucket.key, counted(bucket, tat));
            return Ok(());
        }
        // Shards locked in index order, each once: no deadlock between
        // calls locking two.
        let mut indices: Vec<usize> = buckets.iter().map(|b| shard_of(b.key)).collect();
        indices.sort_unstable();
        indices.dedup();
        let mut locked: Vec<(usize, MutexGuard<'_, HashMap<RateKey, Counted>>)> = indices
            .into_iter()
            .map(|i| (i, self.shards[i].lock().unwrap_or_else(|e| e.into_inner())))
            .collect();
        let mut tats = Vec::with_capacity(buckets.len());
        for (position, bucket) in buckets.iter().enumerate() {
            let shard = shard_of(bucket.key);
            let map = &locked
                .iter()
                .find(|(i, _)| *i == shard)
                .expect("locked above")
                .1;
            let tat =
                next_tat(map.get(&bucket.key), bucket, now).map_err(|wait| (wait, position))?;
            tats.push(tat);
        }
        for (bucket, tat) in buckets.iter().zip(tats) {
            let shard = shard_of(bucket.key);
            let map = &mut locked
                .iter_mut()
                .find(|(i, _)| *i == shard)
                .expect("locked above")
                .1;
            map.insert(bucket.key, counted(bucket, tat));
        }
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

    fn shard(&self, key: RateKey) -> MutexGuard<'_, HashMap<RateKey, Counted>> {
        self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// The bucket's TAT after a call counting its weight, if the call fits:
/// else how long until it would.
fn next_tat(counted: Option<&Counted>, bucket: &Bucket, now: Instant) -> Result<Instant, Duration> {
    let interval = bucket.interval;
    let capacity = interval.saturating_mul(bucket.burst);
    let ahead = counted.map_or(Duration::ZERO, |counted| {
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
    let new_ahead = ahead.min(capacity) + interval.saturating_mul(bucket.weight);
    if new_ahead > capacity {
        return Err(new_ahead - capacity);
    }
    Ok(now + new_ahead)
}

fn counted(bucket: &Bucket, tat: Instant) -> Counted {
    Counted {
        tat,
        interval: bucket.interval,
    }
}

/// Which shard holds `key`: a cheap spread of its id (keys' ids are
/// sequential, organizations' random).
fn shard_of(key: RateKey) -> usize {
    let spread = match key {
        RateKey::OwnLimit(id) => id.0.unsigned_abs(),
        RateKey::OrganizationLimit(id) => id.0.as_u64_pair().1,
        _ => 0,
    };
    usize::try_from(spread % SHARDS as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ApiKeyId;

    #[test]
    fn a_key_gets_its_burst_then_waits_one_interval() {
        let limits = OwnLimits::default();
        let id = RateKey::OwnLimit(ApiKeyId(7));
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
        limits
            .check(RateKey::OwnLimit(ApiKeyId(8)), interval, 1, 1)
            .unwrap();
    }

    #[test]
    fn a_raised_limit_lets_the_next_call_through_and_a_lowered_one_refuses_it() {
        let limits = OwnLimits::default();
        let day = Duration::from_secs(24 * 3600);
        let id = RateKey::OwnLimit(ApiKeyId(9));
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

#[cfg(test)]
mod both {
    use super::*;
    use crate::domain::{ApiKeyId, OrganizationId};

    #[test]
    fn a_call_refused_by_one_bucket_counts_in_neither() {
        let limits = OwnLimits::default();
        let second = Duration::from_secs(1);
        let key = RateKey::OwnLimit(ApiKeyId(1));
        let organization = RateKey::OrganizationLimit(OrganizationId::generate());
        let both = |key_burst, organization_burst| {
            [
                Bucket {
                    key,
                    interval: second,
                    burst: key_burst,
                    weight: 1,
                },
                Bucket {
                    key: organization,
                    interval: second,
                    burst: organization_burst,
                    weight: 1,
                },
            ]
        };
        // The organization allows 2, the key 5: the third call is refused
        // by the organization (position 1), and the key's count stays at 2.
        limits.check_all(&both(5, 2)).unwrap();
        limits.check_all(&both(5, 2)).unwrap();
        assert_eq!(limits.check_all(&both(5, 2)).unwrap_err().1, 1);
        for _ in 0..3 {
            limits.check(key, second, 5, 1).unwrap();
        }
        assert!(limits.check(key, second, 5, 1).is_err());
        // Now the key refuses first (position 0), and the organization's
        // count is untouched by it.
        assert_eq!(limits.check_all(&both(5, 10)).unwrap_err().1, 0);
    }
}
