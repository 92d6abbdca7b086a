//! The instants a client may send: the range google.protobuf.Timestamp
//! documents, 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
//! chrono accepts far more (±262,143 years), but PostgreSQL refuses years
//! before 4714 BC and SQLite's RFC 3339 text only sorts as time while the
//! year has 4 digits, so a wider instant would fail in the store (INTERNAL)
//! or compare wrongly. Checking here makes it the client's INVALID_ARGUMENT.
//! Durations likewise: google.protobuf.Duration's documented range, checked
//! before any conversion can overflow.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::FieldViolation;

/// 0001-01-01T00:00:00Z, in seconds since the Unix epoch.
pub const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
/// 9999-12-31T23:59:59Z, in seconds since the Unix epoch.
pub const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// The instant `seconds` + `nanos` after the Unix epoch, as a
/// google.protobuf.Timestamp carries it, if it is in the documented range;
/// otherwise a violation of `field`.
pub fn parse_timestamp_parts(
    field: &str,
    seconds: i64,
    nanos: i32,
) -> Result<DateTime<Utc>, FieldViolation> {
    let nanos = u32::try_from(nanos)
        .ok()
        .filter(|nanos| *nanos <= 999_999_999)
        .ok_or_else(|| FieldViolation::new(field, "must have nanos between 0 and 999999999"))?;
    if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&seconds) {
        return Err(FieldViolation::new(
            field,
            "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z",
        ));
    }
    DateTime::from_timestamp(seconds, nanos)
        .ok_or_else(|| FieldViolation::new(field, "is not a valid timestamp"))
}

/// ±10,000 years, the range google.protobuf.Duration documents.
pub const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

/// A non-negative span of `seconds` + `nanos`, as a google.protobuf.Duration
/// carries it, if it is in the documented range; otherwise a violation of
/// `field`. Checked by hand because prost's conversion to
/// `std::time::Duration` negates `i64::MIN` (an overflow panic in debug
/// builds) for the most negative input.
pub fn parse_duration_parts(
    field: &str,
    seconds: i64,
    nanos: i32,
) -> Result<Duration, FieldViolation> {
    if seconds < 0 || nanos < 0 {
        return Err(FieldViolation::new(field, "must not be negative"));
    }
    if nanos > 999_999_999 {
        return Err(FieldViolation::new(
            field,
            "must have nanos between 0 and 999999999",
        ));
    }
    if seconds > MAX_DURATION_SECONDS {
        return Err(FieldViolation::new(
            field,
            "must be at most 315576000000 seconds",
        ));
    }
    Ok(Duration::new(seconds.unsigned_abs(), nanos.unsigned_abs()))
}

/// The instant `micros` after the Unix epoch, if it is in the same range.
pub fn time_from_micros(micros: i64) -> Option<DateTime<Utc>> {
    let seconds = micros.div_euclid(1_000_000);
    (MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS)
        .contains(&seconds)
        .then(|| DateTime::from_timestamp_micros(micros))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc3339(time: DateTime<Utc>) -> String {
        time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    }

    #[test]
    fn the_bounds_are_the_documented_ones() {
        let min = parse_timestamp_parts("t", MIN_TIMESTAMP_SECONDS, 0).unwrap();
        let max = parse_timestamp_parts("t", MAX_TIMESTAMP_SECONDS, 999_999_999).unwrap();
        assert_eq!(rfc3339(min), "0001-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(max), "9999-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn timestamps_in_range_are_accepted_and_others_name_the_field() {
        let cases = [
            (MIN_TIMESTAMP_SECONDS, 0, true),
            (MAX_TIMESTAMP_SECONDS, 999_999_999, true),
            (0, 0, true),
            (-1, 999_999_999, true),
            (MIN_TIMESTAMP_SECONDS - 1, 999_999_999, false),
            (MAX_TIMESTAMP_SECONDS + 1, 0, false),
            (-220_000_000_000, 0, false), // year -5000
            (i64::MIN, 0, false),
            (i64::MAX, 0, false),
            (0, -1, false),
            (0, 1_000_000_000, false),
            (0, i32::MIN, false),
            (0, i32::MAX, false),
        ];
        for (seconds, nanos, ok) in cases {
            let parsed = parse_timestamp_parts("expire_before", seconds, nanos);
            assert_eq!(parsed.is_ok(), ok, "{seconds}s {nanos}ns: {parsed:?}");
            if let Err(violation) = parsed {
                assert_eq!(violation.field, "expire_before");
            }
        }
    }

    #[test]
    fn micros_in_range_are_instants_and_others_are_not() {
        let min_micros = MIN_TIMESTAMP_SECONDS * 1_000_000;
        let max_micros = MAX_TIMESTAMP_SECONDS * 1_000_000 + 999_999;
        assert!(time_from_micros(min_micros).is_some());
        assert!(time_from_micros(max_micros).is_some());
        assert!(time_from_micros(0).is_some());
        assert!(time_from_micros(min_micros - 1).is_none());
        assert!(time_from_micros(max_micros + 1).is_none());
        assert!(time_from_micros(i64::MIN).is_none());
        assert!(time_from_micros(i64::MAX).is_none());
    }

    #[test]
    fn durations_in_range_are_accepted_and_others_name_the_field() {
        let cases = [
            (0, 0, Some(Duration::ZERO)),
            (1, 500, Some(Duration::new(1, 500))),
            (
                MAX_DURATION_SECONDS,
                999_999_999,
                Some(Duration::new(315_576_000_000, 999_999_999)),
            ),
            (MAX_DURATION_SECONDS + 1, 0, None),
            (-1, 0, None),
            (0, -1, None),
            (1, -1, None),
            (-1, 1, None),
            (i64::MIN, 0, None),
            (i64::MIN, i32::MIN, None),
            (i64::MAX, i32::MAX, None),
            (0, 1_000_000_000, None),
        ];
        for (seconds, nanos, expected) in cases {
            let parsed = parse_duration_parts("grace_period", seconds, nanos);
            assert_eq!(
                parsed.as_ref().ok(),
                expected.as_ref(),
                "{seconds}s {nanos}ns"
            );
            if let Err(violation) = parsed {
                assert_eq!(violation.field, "grace_period");
            }
        }
    }
}
