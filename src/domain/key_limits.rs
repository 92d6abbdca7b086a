//! A key's own limits: a rate limit (a bucket of calls refilling evenly
//! over a window) and a budget of credits that verification spends and an
//! optional refill resets. The bounds are the proto's (api_key.proto).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::FieldViolation;

const MAX_CALLS: i64 = 1_000_000;
const MIN_WINDOW: Duration = Duration::from_secs(1);
const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
const MAX_CREDITS: i64 = 1_000_000_000_000;
const MIN_REFILL_INTERVAL: Duration = Duration::from_secs(60);
const MAX_REFILL_INTERVAL: Duration = Duration::from_secs(366 * 24 * 3600);
/// Largest cost one VerifyApiKey may spend.
pub const MAX_COST: i64 = 1_000_000_000;

/// Whose limit or credits a verification is judged against: a call must
/// fit both the key's own and its organization's (shared by all its keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    ApiKey,
    Organization,
}

/// What a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateUnit {
    /// Each call counts 1.
    #[default]
    Calls,
    /// Each call counts its cost (tokens per minute, say).
    Credits,
}

impl RateUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Calls => "calls",
            Self::Credits => "credits",
        }
    }

    fn from_stored(text: &str) -> Self {
        // The CHECK constraint admits only these two.
        match text {
            "credits" => Self::Credits,
            _ => Self::Calls,
        }
    }
}

/// Calls (or credits) per window, as a bucket of `calls` refilling evenly
/// over `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRateLimit {
    calls: u32,
    window: Duration,
    unit: RateUnit,
}

impl KeyRateLimit {
    /// `field` names the message (`rate_limit`, `api_key.rate_limit`).
    pub fn parse(
        field: &str,
        calls: i64,
        window: Duration,
        unit: RateUnit,
    ) -> Result<Self, FieldViolation> {
        let most = match unit {
            RateUnit::Calls => MAX_CALLS,
            RateUnit::Credits => MAX_COST,
        };
        if !(1..=most).contains(&calls) {
            return Err(FieldViolation::new(
                format!("{field}.limit"),
                format!("must be from 1 to {most}"),
            ));
        }
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
            return Err(FieldViolation::new(
                format!("{field}.window"),
                "must be from 1 second to 1 day",
            ));
        }
        // The counters keep time in microseconds: one unit's share of the
        // window must be at least one.
        if i128::from(calls) > window.as_micros() as i128 {
            return Err(FieldViolation::new(
                format!("{field}.limit"),
                "must be at most one per microsecond of the window",
            ));
        }
        Ok(Self {
            calls: u32::try_from(calls).unwrap_or(u32::MAX),
            window,
            unit,
        })
    }

    /// As stored: (calls, window in ms, unit), checked positive and known
    /// by the schema.
    pub fn from_stored(calls: i64, window_ms: i64, unit: &str) -> Option<Self> {
        Some(Self {
            calls: u32::try_from(calls).ok().filter(|&calls| calls > 0)?,
            window: Duration::from_millis(u64::try_from(window_ms).ok().filter(|&ms| ms > 0)?),
            unit: RateUnit::from_stored(unit),
        })
    }

    pub fn calls(&self) -> u32 {
        self.calls
    }

    pub fn unit(&self) -> RateUnit {
        self.unit
    }

    /// What a call of `cost` counts against the limit.
    pub fn weight(&self, cost: i64) -> u32 {
        match self.unit {
            RateUnit::Calls => 1,
            RateUnit::Credits => u32::try_from(cost.max(1)).unwrap_or(u32::MAX),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    pub fn window_ms(&self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }

    /// Time between two calls at the steady rate.
    pub fn interval(&self) -> Duration {
        self.window / self.calls
    }
}

/// A periodic reset of a key's balance to `amount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    amount: i64,
    interval: Duration,
}

impl Refill {
    pub fn parse(field: &str, amount: i64, interval: Duration) -> Result<Self, FieldViolation> {
        if !(1..=MAX_CREDITS).contains(&amount) {
            return Err(FieldViolation::new(
                format!("{field}.amount"),
                format!("must be from 1 to {MAX_CREDITS}"),
            ));
        }
        if !(MIN_REFILL_INTERVAL..=MAX_REFILL_INTERVAL).contains(&interval) {
            return Err(FieldViolation::new(
                format!("{field}.interval"),
                "must be from 1 minute to 366 days",
            ));
        }
        Ok(Self { amount, interval })
    }

    pub fn from_stored(amount: i64, interval_ms: i64) -> Option<Self> {
        Some(Self {
            amount: Some(amount).filter(|&amount| amount > 0)?,
            interval: Duration::from_millis(u64::try_from(interval_ms).ok().filter(|&ms| ms > 0)?),
        })
    }

    pub fn amount(&self) -> i64 {
        self.amount
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn interval_ms(&self) -> i64 {
        i64::try_from(self.interval.as_millis()).unwrap_or(i64::MAX)
    }

    /// The last refill boundary at or before `now`, counting whole intervals
    /// from `last` (the last refill, or when the refill was set): `last`
    /// itself if none has passed.
    pub fn latest_boundary(&self, last: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        let interval_ms = self.interval_ms().max(1);
        let elapsed_ms = (now - last).num_milliseconds();
        if elapsed_ms < interval_ms {
            return last;
        }
        last + TimeDelta::milliseconds(elapsed_ms / interval_ms * interval_ms)
    }

    /// The refill after the one at `boundary`.
    pub fn next_after(&self, boundary: DateTime<Utc>) -> DateTime<Utc> {
        boundary + TimeDelta::milliseconds(self.interval_ms())
    }
}

/// Credits as set by CreateApiKey or UpdateApiKey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditsSetting {
    pub remaining: i64,
    pub refill: Option<Refill>,
    /// A balance at or below it is low (a `*.credits_low` event).
    pub low_threshold: Option<i64>,
}

/// Checks a low threshold a request sets: 0 means none.
pub fn parse_low_threshold(field: &str, threshold: i64) -> Result<Option<i64>, FieldViolation> {
    match threshold {
        0 => Ok(None),
        1..=MAX_CREDITS => Ok(Some(threshold)),
        _ => Err(FieldViolation::new(
            field,
            format!("must be from 0 (none) to {MAX_CREDITS}"),
        )),
    }
}

/// The credit notices a balance calls for: whether it is low (at or below
/// the threshold) and whether it is exhausted (nothing left).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreditNotices {
    pub low: bool,
    pub exhausted: bool,
}

impl CreditNotices {
    pub fn of(balance: i64, low_threshold: Option<i64>) -> Self {
        Self {
            low: low_threshold.is_some_and(|threshold| balance <= threshold),
            exhausted: balance <= 0,
        }
    }
}

/// Checks a balance a request sets.
pub fn parse_balance(field: &str, remaining: i64) -> Result<i64, FieldViolation> {
    if (0..=MAX_CREDITS).contains(&remaining) {
        Ok(remaining)
    } else {
        Err(FieldViolation::new(
            field,
            format!("must be from 0 to {MAX_CREDITS}"),
        ))
    }
}

/// A key's stored credits, read as of a moment: a refill that is due counts
/// as done, as the next spend would do it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditsState {
    pub remaining: i64,
    pub refill: Option<(Refill, DateTime<Utc>)>,
}

impl CreditsState {
    /// The balance and the next refill time as of `now`.
    pub fn as_of(&self, now: DateTime<Utc>) -> (i64, Option<DateTime<Utc>>) {
        match self.refill {
            None => (self.remaining, None),
            Some((refill, last)) => {
                let boundary = refill.latest_boundary(last, now);
                let remaining = if boundary > last {
                    refill.amount()
                } else {
                    self.remaining
                };
                (remaining, Some(refill.next_after(boundary)))
            }
        }
    }

    /// The balance after adding `amount` as of `now`, a due refill
    /// counted as done first, and the refill's time to store with it when
    /// one fell due (or the refill would be applied again over the sum).
    pub fn plus(
        &self,
        amount: i64,
        now: DateTime<Utc>,
    ) -> Result<(i64, Option<DateTime<Utc>>), super::Precondition> {
        let (balance, _) = self.as_of(now);
        let sum = balance.saturating_add(amount);
        if sum > MAX_CREDITS {
            return Err(super::Precondition(format!(
                "the balance would be {sum}, above {MAX_CREDITS}"
            )));
        }
        let refilled_at = self.refill.and_then(|(refill, last)| {
            let boundary = refill.latest_boundary(last, now);
            (boundary > last).then_some(boundary)
        });
        Ok((sum, refilled_at))
    }
}

/// Checks an amount of credits a request adds.
pub fn parse_credits_to_add(field: &str, amount: i64) -> Result<i64, FieldViolation> {
    if (1..=MAX_CREDITS).contains(&amount) {
        Ok(amount)
    } else {
        Err(FieldViolation::new(
            field,
            format!("must be from 1 to {MAX_CREDITS}"),
        ))
    }
}

/// What one VerifyApiKey spends: 0 means 1.
pub fn parse_cost(field: &str, cost: i64) -> Result<i64, FieldViolation> {
    match cost {
        0 => Ok(1),
        1..=MAX_COST => Ok(cost),
        _ => Err(FieldViolation::new(
            field,
            format!("must be from 0 (meaning 1) to {MAX_COST}"),
        )),
    }
}

/// A settlement's real cost: 0 (the call cost nothing) up to
/// [`MAX_COST`].
pub fn parse_actual_cost(field: &str, cost: i64) -> Result<i64, FieldViolation> {
    match cost {
        0..=MAX_COST => Ok(cost),
        _ => Err(FieldViolation::new(
            field,
            format!("must be from 0 to {MAX_COST}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn a_refill_boundary_counts_whole_intervals_only() {
        let refill = Refill::parse("r", 10, Duration::from_secs(60)).unwrap();
        assert_eq!(refill.latest_boundary(at(0), at(59)), at(0));
        assert_eq!(refill.latest_boundary(at(0), at(60)), at(60));
        assert_eq!(refill.latest_boundary(at(0), at(185)), at(180));
        assert_eq!(refill.next_after(at(180)), at(240));
    }

    #[test]
    fn a_due_refill_reads_as_done() {
        let refill = Refill::parse("r", 10, Duration::from_secs(60)).unwrap();
        let state = CreditsState {
            remaining: 3,
            refill: Some((refill, at(0))),
        };
        assert_eq!(state.as_of(at(30)), (3, Some(at(60))));
        assert_eq!(state.as_of(at(61)), (10, Some(at(120))));
    }

    #[test]
    fn credits_are_added_to_the_balance_as_of_now_with_a_due_refill_done_first() {
        let refill = Refill::parse("r", 10, Duration::from_secs(60)).unwrap();
        let state = CreditsState {
            remaining: 3,
            refill: Some((refill, at(0))),
        };
        assert_eq!(state.plus(5, at(30)), Ok((8, None)));
        // The refill fell due: 10, plus 5, stored with the refill's time so
        // it is not applied again over the sum.
        assert_eq!(state.plus(5, at(61)), Ok((15, Some(at(60)))));
        let full = CreditsState {
            remaining: MAX_CREDITS,
            refill: None,
        };
        assert!(full.plus(1, at(0)).is_err());
        assert!(parse_credits_to_add("a", 0).is_err());
        assert!(parse_credits_to_add("a", MAX_CREDITS + 1).is_err());
        assert_eq!(parse_credits_to_add("a", 7), Ok(7));
    }

    #[test]
    fn a_balance_is_low_at_its_threshold_and_exhausted_at_zero() {
        let notices = |balance, threshold| {
            let CreditNotices { low, exhausted } = CreditNotices::of(balance, threshold);
            (low, exhausted)
        };
        assert_eq!(notices(11, Some(10)), (false, false));
        assert_eq!(notices(10, Some(10)), (true, false));
        assert_eq!(notices(0, Some(10)), (true, true));
        // Below zero only by a settlement above its reservation: still out.
        assert_eq!(notices(-5, None), (false, true));
        assert_eq!(notices(1, None), (false, false));
    }

    #[test]
    fn a_low_threshold_of_zero_is_none_and_a_negative_one_is_refused() {
        assert_eq!(parse_low_threshold("t", 0), Ok(None));
        assert_eq!(parse_low_threshold("t", 500), Ok(Some(500)));
        assert_eq!(parse_low_threshold("t", MAX_CREDITS), Ok(Some(MAX_CREDITS)));
        assert!(parse_low_threshold("t", -1).is_err());
        assert!(parse_low_threshold("t", MAX_CREDITS + 1).is_err());
    }

    #[test]
    fn limits_outside_the_documented_bounds_are_refused() {
        let calls = RateUnit::Calls;
        assert!(KeyRateLimit::parse("r", 0, Duration::from_secs(60), calls).is_err());
        assert!(KeyRateLimit::parse("r", 5, Duration::from_millis(999), calls).is_err());
        assert!(KeyRateLimit::parse("r", 5, Duration::from_secs(86_401), calls).is_err());
        let minute = Duration::from_secs(60);
        assert!(KeyRateLimit::parse("r", 2_000_000, minute, calls).is_err());
        let tokens = KeyRateLimit::parse("r", 2_000_000, minute, RateUnit::Credits).unwrap();
        assert_eq!((tokens.weight(500), tokens.weight(0)), (500, 1));
        assert_eq!(
            KeyRateLimit::parse("r", 9, minute, calls)
                .unwrap()
                .weight(500),
            1
        );
        // One unit per microsecond of the window at most.
        let second = Duration::from_secs(1);
        assert!(KeyRateLimit::parse("r", 1_000_000, second, RateUnit::Credits).is_ok());
        assert!(KeyRateLimit::parse("r", 1_000_001, second, RateUnit::Credits).is_err());
        assert!(Refill::parse("r", 0, Duration::from_secs(60)).is_err());
        assert!(Refill::parse("r", 1, Duration::from_secs(59)).is_err());
        assert!(parse_balance("c", -1).is_err());
        assert_eq!(parse_cost("cost", 0), Ok(1));
        assert!(parse_cost("cost", -1).is_err());
        assert!(parse_cost("cost", MAX_COST + 1).is_err());
    }
}
