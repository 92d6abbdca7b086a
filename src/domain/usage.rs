//! Usage history's values: what each VerifyApiKey answer counts as, the
//! counters and the counts of one key's hour, and the range of hours a
//! client asks for.

use std::fmt;

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
    /// A VALID answer, with what it spent or (with reserve) held.
    Valid {
        credits_spent: i64,
        credits_reserved: i64,
    },
    Revoked,
    Expired,
    RateLimited,
    UsageExceeded,
    AddressNotAllowed,
    InsufficientPermissions,
}

/// What happened to a reservation after its VALID answer: amounts only, no
/// answer is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationEvent {
    /// Settled at `charged`, giving `refunded` back to the balance.
    Settled { charged: i64, refunded: i64 },
    /// Released: `refunded` given back.
    Released { refunded: i64 },
    /// Expired unsettled: charged at the reserved amount.
    Expired { charged: i64 },
}

/// One counter of usage history. The list of counters is written here
/// once: [`UsageCounts`] holds a value for each, and the store's columns and
/// the API's fields each map every counter in one exhaustive `match`, so a
/// counter added here (to the enum and to [`Self::ALL`]) fails to compile
/// until it has a column and a field. (The store's upsert, which adds each
/// column, is the one place the compiler cannot point to.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsageCounter {
    Valid,
    Revoked,
    Expired,
    RateLimited,
    UsageExceeded,
    CreditsSpent,
    AddressNotAllowed,
    InsufficientPermissions,
    CreditsReserved,
    CreditsSettled,
    CreditsRefunded,
    CreditsExpired,
}

impl UsageCounter {
    /// Every counter, in declaration order: `ALL[c as usize] == c`.
    pub const ALL: [Self; 12] = [
        Self::Valid,
        Self::Revoked,
        Self::Expired,
        Self::RateLimited,
        Self::UsageExceeded,
        Self::CreditsSpent,
        Self::AddressNotAllowed,
        Self::InsufficientPermissions,
        Self::CreditsReserved,
        Self::CreditsSettled,
        Self::CreditsRefunded,
        Self::CreditsExpired,
    ];
}

// `ALL` lists each counter at its own index, which `UsageCounts` relies on.
const _: () = {
    let mut index = 0;
    while index < UsageCounter::ALL.len() {
        assert!(UsageCounter::ALL[index] as usize == index);
        index += 1;
    }
};

/// Answers of each kind, and the credits spent: a value per
/// [`UsageCounter`]. Sums saturate rather than wrap.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts([i64; UsageCounter::ALL.len()]);

impl UsageCounts {
    /// Counts with each counter's value given by `value`.
    pub fn from_fn(value: impl FnMut(UsageCounter) -> i64) -> Self {
        Self(UsageCounter::ALL.map(value))
    }

    /// The value of `counter`.
    pub fn get(&self, counter: UsageCounter) -> i64 {
        self.0[counter as usize]
    }

    /// Every counter with its value, in [`UsageCounter::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (UsageCounter, i64)> + '_ {
        UsageCounter::ALL.into_iter().zip(self.0)
    }

    /// Counts one answer.
    pub fn count(&mut self, event: UsageEvent) {
        let counter = match event {
            UsageEvent::Valid {
                credits_spent,
                credits_reserved,
            } => {
                self.add_to(UsageCounter::CreditsSpent, credits_spent);
                self.add_to(UsageCounter::CreditsReserved, credits_reserved);
                UsageCounter::Valid
            }
            UsageEvent::Revoked => UsageCounter::Revoked,
            UsageEvent::Expired => UsageCounter::Expired,
            UsageEvent::RateLimited => UsageCounter::RateLimited,
            UsageEvent::UsageExceeded => UsageCounter::UsageExceeded,
            UsageEvent::AddressNotAllowed => UsageCounter::AddressNotAllowed,
            UsageEvent::InsufficientPermissions => UsageCounter::InsufficientPermissions,
        };
        self.add_to(counter, 1);
    }

    /// Adds what became of a reservation.
    pub fn count_reservation(&mut self, event: ReservationEvent) {
        match event {
            ReservationEvent::Settled { charged, refunded } => {
                self.add_to(UsageCounter::CreditsSettled, charged);
                self.add_to(UsageCounter::CreditsRefunded, refunded);
            }
            ReservationEvent::Released { refunded } => {
                self.add_to(UsageCounter::CreditsRefunded, refunded)
            }
            ReservationEvent::Expired { charged } => {
                self.add_to(UsageCounter::CreditsExpired, charged)
            }
        }
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &UsageCounts) {
        for (counter, value) in other.iter() {
            self.add_to(counter, value);
        }
    }

    fn add_to(&mut self, counter: UsageCounter, value: i64) {
        let sum = &mut self.0[counter as usize];
        *sum = sum.saturating_add(value);
    }
}

impl fmt::Debug for UsageCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
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
        counts.count(UsageEvent::Valid {
            credits_spent: 5,
            credits_reserved: 0,
        });
        counts.count(UsageEvent::Valid {
            credits_spent: 0,
            credits_reserved: 3,
        });
        counts.count_reservation(ReservationEvent::Settled {
            charged: 2,
            refunded: 1,
        });
        counts.count_reservation(ReservationEvent::Released { refunded: 4 });
        counts.count_reservation(ReservationEvent::Expired { charged: 6 });
        counts.count(UsageEvent::RateLimited);
        counts.count(UsageEvent::Revoked);
        counts.count(UsageEvent::Expired);
        counts.count(UsageEvent::UsageExceeded);
        counts.count(UsageEvent::AddressNotAllowed);
        counts.count(UsageEvent::InsufficientPermissions);
        let mut total = UsageCounts::default();
        total.add(&counts);
        total.add(&counts);
        let expected = UsageCounts::from_fn(|counter| match counter {
            UsageCounter::Valid => 4,
            UsageCounter::CreditsSpent => 10,
            UsageCounter::CreditsReserved => 6,
            UsageCounter::CreditsSettled => 4,
            UsageCounter::CreditsRefunded => 10,
            UsageCounter::CreditsExpired => 12,
            _ => 2,
        });
        assert_eq!(total, expected);
    }

    #[test]
    fn counts_iterate_every_counter_in_order_with_its_value() {
        let counts = UsageCounts::from_fn(|counter| counter as i64 * 10);
        let listed: Vec<(UsageCounter, i64)> = counts.iter().collect();
        assert_eq!(listed.len(), UsageCounter::ALL.len());
        for (index, (counter, value)) in listed.into_iter().enumerate() {
            assert_eq!(counter, UsageCounter::ALL[index]);
            assert_eq!(value, counts.get(counter));
            assert_eq!(value, index as i64 * 10);
        }
    }

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        let mut counts = UsageCounts::from_fn(|_| i64::MAX - 1);
        counts.count(UsageEvent::Valid {
            credits_spent: 5,
            credits_reserved: 5,
        });
        counts.add(&UsageCounts::from_fn(|_| 7));
        assert_eq!(counts, UsageCounts::from_fn(|_| i64::MAX));
    }

    #[test]
    fn counts_debug_names_each_counter() {
        let mut counts = UsageCounts::default();
        counts.count(UsageEvent::Expired);
        assert_eq!(
            format!("{counts:?}"),
            "{Valid: 0, Revoked: 0, Expired: 1, RateLimited: 0, UsageExceeded: 0, CreditsSpent: 0, \
             AddressNotAllowed: 0, InsufficientPermissions: 0, CreditsReserved: 0, CreditsSettled: 0, \
             CreditsRefunded: 0, CreditsExpired: 0}"
        );
    }
}
