//! Keyset pagination: page sizes per AIP-158 and opaque page tokens that
//! encode the last row's (create time, id) and the filter they belong to.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::fmt::Display;
use std::str::FromStr;

use crate::error::FieldViolation;

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
    filter_fingerprint: String,
}

const TOKEN_VERSION: &str = "p1";
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

fn fingerprint(filter: &str) -> String {
    let digest = Sha256::digest(filter.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..8])
}

fn encode_token<K: Display>(cursor: &PageCursor<K>, filter_fingerprint: &str) -> String {
    let micros = cursor.create_time.timestamp_micros();
    let raw = format!(
        "{TOKEN_VERSION}|{filter_fingerprint}|{micros}|{}",
        cursor.id
    );
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode_token<K: FromStr>(
    token: &str,
    filter_fingerprint: &str,
) -> Result<PageCursor<K>, FieldViolation> {
    let invalid = || FieldViolation::new("page_token", "is not a token this list issued");
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid())?;
    let mut parts = raw.splitn(4, '|');
    let (Some(TOKEN_VERSION), Some(fingerprint), Some(micros), Some(id)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    if fingerprint != filter_fingerprint {
        return Err(FieldViolation::new(
            "page_token",
            "was issued for a different filter; start again without a token",
        ));
    }
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    let create_time = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
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
}
