//! Usage history's values: what each VerifyApiKey answer counts as, the
//! counts of one key's hour, and the range of hours a client asks for.

use chrono::{DateTime, TimeDelta, Utc};

use super::FieldViolation;

const HOUR_SECONDS: i64 = 3600;

/// The longest range one usage query covers: 31 days of hours.
pub const MAX_USAGE_RANGE_HOURS: i64 = 31 * 24;

/// The range a query without a start covers: the day before its end.
const DEFAULT_USAGE_RANGE_HOURS: i64 = 24;

/// What one VerifyApiKey answer for a known key counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageEvent {
    Valid { credits_spent: i64 },
    Revoked,
    Expired,
    RateLimited,
    UsageExceeded,
}

/// Answers of each kind, and the credits spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    pub valid: i64,
    pub revoked: i64,
    pub expired: i64,
    pub rate_limited: i64,
    pub usage_exceeded: i64,
    pub credits_spent: i64,
}

impl UsageCounts {
    /// Counts one answer.
    pub fn count(&mut self, event: UsageEvent) {
        let counter = match event {
            UsageEvent::Valid { credits_spent } => {
                self.credits_spent = self.credits_spent.saturating_add(credits_spent);
                &mut self.valid
            }
            UsageEvent::Revoked => &mut self.revoked,
            UsageEvent::Expired => &mut self.expired,
            UsageEvent::RateLimited => &mut self.rate_limited,
            UsageEvent::UsageExceeded => &mut self.usage_exceeded,
        };
        *counter = counter.saturating_add(1);
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &UsageCounts) {
        self.valid = self.valid.saturating_add(other.valid);
        self.revoked = self.revoked.saturating_add(other.revoked);
        self.expired = self.expired.saturating_add(other.expired);
        self.rate_limited = self.rate_limited.saturating_add(other.rate_limited);
        self.usage_exceeded = self.usage_exceeded.saturating_add(other.usage_exceeded);
        self.credits_spent = self.credits_spent.saturating_add(other.credits_spent);
    }
}

/// The start of the hour (UTC) `at` falls in.
pub fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    let start = at.timestamp().div_euclid(HOUR_SECONDS) * HOUR_SECONDS;
    DateTime::from_timestamp(start, 0).unwrap_or(at)
}

/// The hours a usage query covers: from `start` (the start of an hour) up
/// to `end` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRange {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl UsageRange {
    /// The range a client asked for: `end` defaults to `now`, `start` to a
    /// day before `end` and is rounded down to the hour. A range that ends
    /// before it starts, or spans more than 31 days, is a violation.
    pub fn new(
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Self, FieldViolation> {
        let end = end.unwrap_or(now);
        let start =
            hour_of(start.unwrap_or_else(|| end - TimeDelta::hours(DEFAULT_USAGE_RANGE_HOURS)));
        if end <= start {
            return Err(FieldViolation::new("end_time", "must be after start_time"));
        }
        if end - start > TimeDelta::hours(MAX_USAGE_RANGE_HOURS) {
            return Err(FieldViolation::new(
                "end_time",
                "must be at most 31 days after start_time",
            ));
        }
        Ok(Self { start, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn an_instant_falls_in_the_hour_that_starts_at_or_before_it() {
        assert_eq!(
            hour_of(at("2026-11-30T05:00:00Z")),
            at("2026-11-30T05:00:00Z")
        );
        assert_eq!(
            hour_of(at("2026-11-30T05:59:59.999Z")),
            at("2026-11-30T05:00:00Z")
        );
        assert_eq!(
            hour_of(at("1969-12-31T23:30:00Z")),
            at("1969-12-31T23:00:00Z")
        );
    }

    #[test]
    fn a_range_defaults_to_the_day_before_now_from_the_start_of_its_hour() {
        let now = at("2026-11-30T05:20:00Z");
        let range = UsageRange::new(None, None, now).unwrap();
        assert_eq!(range.start, at("2026-11-29T05:00:00Z"));
        assert_eq!(range.end, now);
    }

    #[test]
    fn a_range_must_end_after_it_starts_and_span_at_most_31_days() {
        let now = at("2026-11-30T05:20:00Z");
        let start = at("2026-11-01T00:00:00Z");
        let backwards = UsageRange::new(Some(now), Some(start), now).unwrap_err();
        assert_eq!(backwards.field, "end_time");
        assert!(UsageRange::new(Some(start), Some(at("2026-12-02T00:00:00Z")), now).is_ok());
        let too_long = UsageRange::new(Some(start), Some(at("2026-12-02T00:00:01Z")), now);
        assert_eq!(too_long.unwrap_err().field, "end_time");
    }

    #[test]
    fn counts_add_up_by_kind() {
        let mut counts = UsageCounts::default();
        counts.count(UsageEvent::Valid { credits_spent: 5 });
        counts.count(UsageEvent::Valid { credits_spent: 0 });
        counts.count(UsageEvent::RateLimited);
        let mut total = UsageCounts::default();
        total.add(&counts);
        total.add(&counts);
        assert_eq!(
            (total.valid, total.rate_limited, total.credits_spent),
            (4, 2, 10)
        );
    }
}
