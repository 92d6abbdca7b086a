//! Keyset pagination: page sizes per AIP-158 and opaque page tokens that
//! encode the last row's (create time, id) and the filter they belong to.
//! A token is client input like any other: whatever its bytes, decoding
//! yields a cursor the stores can compare with, or a `page_token` violation.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::fmt::Display;
use std::str::FromStr;

use super::time_range::time_from_micros;
use super::FieldViolation;

/// The position after which the next page starts: the last row's creation
/// time and id (`K`: the table's id type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor<K> {
    pub create_time: DateTime<Utc>,
    pub id: K,
}

/// A validated page request: how many rows and from where.
#[derive(Debug, Clone)]
pub struct PageRequest<K> {
    pub size: i64,
    pub after: Option<PageCursor<K>>,
    filter_fingerprint: [u8; 8],
}

const TOKEN_VERSION: &str = "p1";
/// Longer than any token this service issues (a UUID cursor encodes to
/// about 100 characters); refusing longer ones bounds the decoding work.
const MAX_TOKEN_LEN: usize = 512;
pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 1000;

impl<K: FromStr + Display> PageRequest<K> {
    /// `filter` describes every list filter of the request, so a token cannot
    /// be replayed against another filter.
    pub fn parse(page_size: i32, page_token: &str, filter: &str) -> Result<Self, FieldViolation> {
        let size = match page_size {
            size if size < 0 => {
                return Err(FieldViolation::new("page_size", "must not be negative"))
            }
            0 => DEFAULT_PAGE_SIZE,
            size => i64::from(size).min(MAX_PAGE_SIZE),
        };
        let filter_fingerprint = fingerprint(filter);
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode_token(page_token, &filter_fingerprint)?)
        };
        Ok(Self {
            size,
            after,
            filter_fingerprint,
        })
    }

    /// How many rows to fetch: one more than a page, to learn whether
    /// another page follows without a count query.
    pub fn fetch_limit(&self) -> i64 {
        self.size + 1
    }

    /// The filters this request's tokens are bound to (the 8 bytes the
    /// tokens carry): two requests with equal fingerprints, size and cursor
    /// get the same page and the same next token.
    pub fn filter_fingerprint(&self) -> u64 {
        u64::from_be_bytes(self.filter_fingerprint)
    }

    /// The page of `rows` (fetched with [`Self::fetch_limit`]) and the token
    /// for the next one.
    pub fn page<T>(&self, mut rows: Vec<T>, cursor_of: impl Fn(&T) -> PageCursor<K>) -> Page<T> {
        let next_page_token = self.finish(&mut rows, cursor_of);
        Page {
            items: rows,
            next_page_token,
        }
    }

    /// Trims the extra row and returns the token for the next page, empty at
    /// the end.
    pub fn finish<T>(&self, rows: &mut Vec<T>, cursor_of: impl Fn(&T) -> PageCursor<K>) -> String {
        let page_len = usize::try_from(self.size).unwrap_or(usize::MAX);
        if rows.len() <= page_len {
            return String::new();
        }
        rows.truncate(page_len);
        rows.last()
            .map(|last| encode_token(&cursor_of(last), &self.filter_fingerprint))
            .unwrap_or_default()
    }
}

/// One page of a list, and the token for the next one (empty at the end).
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

fn fingerprint(filter: &str) -> [u8; 8] {
    let digest = Sha256::digest(filter.as_bytes());
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    first
}

fn encode_token<K: Display>(cursor: &PageCursor<K>, filter_fingerprint: &[u8; 8]) -> String {
    let micros = cursor.create_time.timestamp_micros();
    let filter_fingerprint = URL_SAFE_NO_PAD.encode(filter_fingerprint);
    let raw = format!(
        "{TOKEN_VERSION}|{filter_fingerprint}|{micros}|{}",
        cursor.id
    );
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode_token<K: FromStr>(
    token: &str,
    filter_fingerprint: &[u8; 8],
) -> Result<PageCursor<K>, FieldViolation> {
    let invalid = || FieldViolation::new("page_token", "is not a token this list issued");
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid());
    }
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid())?;
    let mut parts = raw.splitn(4, '|');
    let (Some(TOKEN_VERSION), Some(fingerprint), Some(micros), Some(id)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    if fingerprint != URL_SAFE_NO_PAD.encode(filter_fingerprint) {
        return Err(FieldViolation::new(
            "page_token",
            "was issued for a different filter; start again without a token",
        ));
    }
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    // Only instants the stores hold: PostgreSQL refuses years before 4714 BC
    // (an INTERNAL error), SQLite would compare out-of-range text wrongly.
    let create_time = time_from_micros(micros).ok_or_else(invalid)?;
    let id = id.parse().map_err(|_| invalid())?;
    Ok(PageCursor { create_time, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_follow_aip_158() {
        let parse = |size| PageRequest::<i64>::parse(size, "", "f");
        assert_eq!(parse(0).unwrap().size, 50);
        assert_eq!(parse(5000).unwrap().size, 1000);
        assert_eq!(parse(7).unwrap().size, 7);
        assert!(parse(-1).is_err());
    }

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_filter() {
        let request = PageRequest::<i64>::parse(1, "", "owner=a").unwrap();
        let cursor = PageCursor {
            create_time: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: 42_i64,
        };
        let mut rows = vec![cursor.clone(), cursor.clone()];
        let token = request.finish(&mut rows, Clone::clone);
        assert_eq!(rows.len(), 1);
        let next = PageRequest::parse(1, &token, "owner=a").unwrap();
        assert_eq!(next.after, Some(cursor));
        assert!(PageRequest::<i64>::parse(1, &token, "owner=b").is_err());
        assert!(PageRequest::<i64>::parse(1, "garbage!", "owner=a").is_err());
        assert!(PageRequest::<uuid::Uuid>::parse(1, &token, "owner=a").is_err());
    }

    /// A token as this service writes it, with every part chosen by the test.
    fn forged(fingerprint_of: &str, micros: &str, id: &str) -> String {
        let raw = format!(
            "{TOKEN_VERSION}|{}|{micros}|{id}",
            URL_SAFE_NO_PAD.encode(fingerprint(fingerprint_of))
        );
        URL_SAFE_NO_PAD.encode(raw)
    }

    #[test]
    fn forged_cursors_outside_the_timestamp_range_are_refused() {
        use super::super::time_range::{MAX_TIMESTAMP_SECONDS, MIN_TIMESTAMP_SECONDS};
        let min = MIN_TIMESTAMP_SECONDS * 1_000_000;
        let max = MAX_TIMESTAMP_SECONDS * 1_000_000 + 999_999;
        let year_minus_5000 = -219_929_716_800_000_000_i64;
        let cases: [(i128, bool); 10] = [
            (0, true),
            (min.into(), true),
            (max.into(), true),
            ((min - 1).into(), false),
            ((max + 1).into(), false),
            (year_minus_5000.into(), false),
            (i64::MIN.into(), false),
            (i64::MAX.into(), false),
            (i128::from(i64::MAX) + 1, false), // does not fit an i64
            (-(i128::from(i64::MAX)) - 2, false),
        ];
        for (micros, ok) in cases {
            let token = forged("f", &micros.to_string(), "7");
            let parsed = PageRequest::<i64>::parse(10, &token, "f");
            assert_eq!(parsed.is_ok(), ok, "{micros}: {parsed:?}");
            if let Err(violation) = parsed {
                assert_eq!(violation.field, "page_token");
            }
        }
    }

    #[test]
    fn forged_tokens_with_bad_parts_are_page_token_violations() {
        let uuid = "0190a7a0-0000-7000-8000-000000000000";
        for token in [
            forged("f", "0", "not-a-uuid"),
            forged("f", "0", ""),
            forged("f", "", uuid),
            forged("f", "1e6", uuid),
            forged("f", "0x10", uuid),
            forged("f", " 1", uuid),
            forged("other filter", "0", uuid),
            URL_SAFE_NO_PAD.encode(format!(
                "p2|{}|0|{uuid}",
                URL_SAFE_NO_PAD.encode(fingerprint("f"))
            )),
            URL_SAFE_NO_PAD.encode("p1"),
            URL_SAFE_NO_PAD.encode([0xff, 0xfe, b'|']),
            "=".into(),
            "a".into(),
            "!!!!".into(),
            "A".repeat(MAX_TOKEN_LEN + 1),
        ] {
            let parsed = PageRequest::<uuid::Uuid>::parse(10, &token, "f");
            let violation = parsed.expect_err(&token);
            assert_eq!(violation.field, "page_token", "{token}");
        }
        assert!(PageRequest::<uuid::Uuid>::parse(10, &forged("f", "0", uuid), "f").is_ok());
    }

    #[test]
    fn random_tokens_never_panic_and_are_refused_or_in_range() {
        use rand::{Rng, RngCore, SeedableRng};
        // Seeded: a failure reproduces.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        for round in 0..20_000 {
            let token = match round % 4 {
                // Random bytes, base64-encoded: passes the first decoding step.
                0 => {
                    let mut bytes = vec![0u8; rng.gen_range(1..96)];
                    rng.fill_bytes(&mut bytes);
                    URL_SAFE_NO_PAD.encode(bytes)
                }
                // Random text, mostly not base64 at all.
                1 => (0..rng.gen_range(1..64))
                    .map(|_| char::from(rng.gen_range(0x20u8..0x7f)))
                    .collect(),
                // Well-formed, with a random time and id.
                2 => forged(
                    "f",
                    &rng.gen::<i64>().to_string(),
                    &rng.gen::<i64>().to_string(),
                ),
                // Well-formed, with a time near a bound.
                _ => {
                    let bound = if rng.gen() {
                        super::super::time_range::MIN_TIMESTAMP_SECONDS
                    } else {
                        super::super::time_range::MAX_TIMESTAMP_SECONDS
                    };
                    let micros = bound * 1_000_000 + rng.gen_range(-2_000_000..2_000_000);
                    forged("f", &micros.to_string(), "1")
                }
            };
            match PageRequest::<i64>::parse(10, &token, "f") {
                Ok(page) => {
                    let after = page.after.expect("a token gives a cursor");
                    let year = chrono::Datelike::year(&after.create_time);
                    assert!((1..=9999).contains(&year), "{token}: {after:?}");
                }
                Err(violation) => assert_eq!(violation.field, "page_token", "{token}"),
            }
        }
    }
}
