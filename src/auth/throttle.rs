//! Login throttling: failed attempts are counted per email and per client
//! address in a fixed window; past the limit Login is refused before any
//! hashing. In-process, so each replica counts on its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Entries kept before stale ones are swept, bounding memory under attack.
const SWEEP_THRESHOLD: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Email(String),
    Address(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Counts failed logins.
#[derive(Clone)]
pub struct LoginThrottle {
    inner: Arc<Mutex<HashMap<Subject, Window>>>,
    max_per_email: u32,
    max_per_address: u32,
    window: Duration,
}

impl LoginThrottle {
    pub fn new(max_per_email: u32, max_per_address: u32, window: Duration) -> Self {
        Self {
            inner: Arc::default(),
            max_per_email,
            max_per_address,
            window,
        }
    }

    /// `Err(retry_after)` when either subject is over its limit.
    pub fn check(&self, email: &str, address: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut subjects = vec![(Subject::Email(email.to_owned()), self.max_per_email)];
        subjects.extend(address.map(|ip| (Subject::Address(ip), self.max_per_address)));
        let mut retry_after = None;
        for (subject, limit) in subjects {
            if let Some(window) = map.get(&subject) {
                let elapsed = now.duration_since(window.started);
                if elapsed < self.window && window.failures >= limit {
                    let wait = self.window - elapsed;
                    retry_after = Some(retry_after.map_or(wait, |w: Duration| w.max(wait)));
                }
            }
        }
        retry_after.map_or(Ok(()), Err)
    }

    pub fn record_failure(&self, email: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > SWEEP_THRESHOLD {
            map.retain(|_, window| now.duration_since(window.started) < self.window);
        }
        let mut subjects = vec![Subject::Email(email.to_owned())];
        subjects.extend(address.map(Subject::Address));
        for subject in subjects {
            let window = map.entry(subject).or_insert(Window {
                started: now,
                failures: 0,
            });
            if now.duration_since(window.started) >= self.window {
                *window = Window {
                    started: now,
                    failures: 0,
                };
            }
            window.failures += 1;
        }
    }

    /// A successful login clears the email's count (not the address's, so a
    /// valid account cannot be used to reset an address spraying others).
    pub fn record_success(&self, email: &str) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&Subject::Email(email.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_throttled_after_its_limit() {
        let throttle = LoginThrottle::new(2, 100, Duration::from_secs(60));
        assert!(throttle.check("a@x.io", None).is_ok());
        throttle.record_failure("a@x.io", None);
        throttle.record_failure("a@x.io", None);
        assert!(throttle.check("a@x.io", None).is_err());
        assert!(throttle.check("b@x.io", None).is_ok());
        throttle.record_success("a@x.io");
        assert!(throttle.check("a@x.io", None).is_ok());
    }

    #[test]
    fn address_is_throttled_across_emails() {
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let throttle = LoginThrottle::new(100, 2, Duration::from_secs(60));
        throttle.record_failure("a@x.io", Some(ip));
        throttle.record_failure("b@x.io", Some(ip));
        assert!(throttle.check("c@x.io", Some(ip)).is_err());
        assert!(throttle.check("c@x.io", None).is_ok());
    }
}
