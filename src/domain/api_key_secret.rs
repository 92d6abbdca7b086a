//! The API key format: `cbk_` + a 43-character base62 body + a 6-character
//! base62 checksum. The fixed prefix lets secret scanners find leaked keys;
//! the checksum lets VerifyApiKey reject typos and garbage without a
//! database query. Only the SHA-256 digest is stored.
//!
//! Keys issued since issue 28 end their body with a 3-character tag and
//! their issue time (6 base62 characters of Unix seconds), after 34 random
//! characters (202 bits from the OS CSPRNG). The tag, a digest of the rest,
//! tells them apart from earlier keys (43 random characters; one passes for
//! a new one by chance, 1 in 62^3). The shape and the checksum are those of
//! earlier keys, so the previous version accepts new keys (a rolling
//! upgrade or a roll-back loses none). The issue time lets a replica
//! answer "no such key" for a made-up or deleted key without a query
//! ([`crate::hot_path::known_keys`]): a key issued well before the last
//! moment this replica knows it heard of every key cannot be one it has not
//! heard of.

use std::fmt;

use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

/// Every key starts with this.
pub const API_KEY_PREFIX: &str = "cbk_";
const BODY_LEN: usize = 43;
/// The issue time at the end of a current key's body.
const ISSUED_LEN: usize = 6;
/// The tag before it.
const TAG_LEN: usize = 3;
/// The random characters before the tag.
const RANDOM_LEN: usize = BODY_LEN - TAG_LEN - ISSUED_LEN;
const CHECKSUM_LEN: usize = 6;
const KEY_LEN: usize = API_KEY_PREFIX.len() + BODY_LEN + CHECKSUM_LEN;
/// Characters of the key shown in lists: the prefix plus 8 of the body,
/// too few (48 bits) to help guess the rest.
const DISPLAY_PREFIX_LEN: usize = API_KEY_PREFIX.len() + 8;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A plaintext API key. `Debug` redacts it; only `expose` reveals it, once,
/// for the response that creates it.
#[derive(Clone)]
pub struct ApiKeySecret {
    text: String,
    /// Unix seconds, for keys of the current format.
    issued_at: Option<i64>,
}

/// SHA-256 of a key: what the database stores and is searched by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKeyDigest(pub [u8; 32]);

impl ApiKeySecret {
    /// A new key, issued now.
    pub fn generate() -> Self {
        Self::generate_issued_at(chrono::Utc::now().timestamp())
    }

    /// A new key claiming to be issued at `unix_seconds` (clamped to what
    /// the format holds): what `generate` does, and how a test or the load
    /// generator makes up a key issued long ago.
    pub fn generate_issued_at(unix_seconds: i64) -> Self {
        Self::generate_with(&mut OsRng, unix_seconds)
    }

    /// [`Self::generate_issued_at`] drawing from `rng`: the load generator
    /// makes up keys with a fast one (a key the service issues always
    /// comes from the OS CSPRNG).
    pub fn generate_with(rng: &mut impl rand::Rng, unix_seconds: i64) -> Self {
        let issued_at = unix_seconds.clamp(0, MAX_ISSUED_AT);
        let random = Alphanumeric.sample_string(rng, RANDOM_LEN);
        let issued = base62(issued_at as u64, ISSUED_LEN);
        let body = format!("{random}{}{issued}", tag(&random, &issued));
        let checksum = checksum(&body);
        Self {
            text: format!("{API_KEY_PREFIX}{body}{checksum}"),
            issued_at: Some(issued_at),
        }
    }

    /// Accepts only well-formed keys with a matching checksum, of either
    /// format.
    pub fn parse(presented: &str) -> Option<Self> {
        if presented.len() != KEY_LEN || !presented.is_ascii() {
            return None;
        }
        let rest = presented.strip_prefix(API_KEY_PREFIX)?;
        let (body, sum) = rest.split_at(BODY_LEN);
        if !body.bytes().all(|b| b.is_ascii_alphanumeric()) || checksum(body) != sum {
            return None;
        }
        let (random, rest) = body.split_at(RANDOM_LEN);
        let (key_tag, issued) = rest.split_at(TAG_LEN);
        let issued_at = (tag(random, issued) == key_tag).then(|| from_base62(issued) as i64);
        Some(Self {
            text: presented.to_owned(),
            issued_at,
        })
    }

    pub fn digest(&self) -> ApiKeyDigest {
        ApiKeyDigest(Sha256::digest(self.text.as_bytes()).into())
    }

    pub fn display_prefix(&self) -> &str {
        &self.text[..DISPLAY_PREFIX_LEN]
    }

    pub fn expose(&self) -> &str {
        &self.text
    }

    /// When the key was issued (Unix seconds, as its issuer's clock read),
    /// for keys of the current format; `None` for earlier keys.
    pub fn issued_at(&self) -> Option<i64> {
        self.issued_at
    }
}

/// The largest issue time 6 base62 characters hold (year 3770).
const MAX_ISSUED_AT: i64 = 62_i64.pow(ISSUED_LEN as u32) - 1;

fn checksum(body: &str) -> String {
    short_digest(&[body], CHECKSUM_LEN)
}

/// A current key's tag: a digest of its random part and issue time.
fn tag(random: &str, issued: &str) -> String {
    short_digest(&["issued:", random, issued], TAG_LEN)
}

/// The first 32 bits of the SHA-256 of `parts`, as `len` base62 digits.
fn short_digest(parts: &[&str], len: usize) -> String {
    let digest = parts
        .iter()
        .fold(Sha256::new(), |hash, part| {
            hash.chain_update(part.as_bytes())
        })
        .finalize();
    base62(
        u64::from(u32::from_be_bytes([
            digest[0], digest[1], digest[2], digest[3],
        ])),
        len,
    )
}

/// `value` as `len` base62 digits, most significant first (what does not
/// fit is dropped).
fn base62(mut value: u64, len: usize) -> String {
    let mut out = vec![b'0'; len];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(out).expect("base62 digits are ASCII")
}

/// The inverse of [`base62`] on alphanumeric input.
fn from_base62(digits: &str) -> u64 {
    digits.bytes().fold(0, |value, digit| {
        let index = match digit {
            b'0'..=b'9' => digit - b'0',
            b'A'..=b'Z' => digit - b'A' + 10,
            _ => digit - b'a' + 36,
        };
        value * 62 + u64::from(index)
    })
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeySecret(<redacted>)")
    }
}

impl fmt::Debug for ApiKeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeyDigest(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_differ() {
        let a = ApiKeySecret::generate();
        let b = ApiKeySecret::generate();
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("cbk_"));
        assert_eq!(a.expose().len(), KEY_LEN);
        assert!(ApiKeySecret::parse(a.expose()).is_some());
    }

    #[test]
    fn a_current_key_carries_its_issue_time_and_an_earlier_one_none() {
        let now = chrono::Utc::now().timestamp();
        let key = ApiKeySecret::generate();
        let issued = ApiKeySecret::parse(key.expose())
            .unwrap()
            .issued_at()
            .unwrap();
        assert!((now..=now + 5).contains(&issued), "{issued} vs {now}");
        for at in [0, 1, 61, 62, 1_700_000_000, MAX_ISSUED_AT] {
            let key = ApiKeySecret::generate_issued_at(at);
            assert_eq!(
                ApiKeySecret::parse(key.expose()).unwrap().issued_at(),
                Some(at)
            );
        }
        assert_eq!(ApiKeySecret::generate_issued_at(-5).issued_at(), Some(0));
        // The previous version's check (alphanumeric body, checksum of the
        // body) passes a current key.
        let text = key.expose();
        let body = &text[API_KEY_PREFIX.len()..API_KEY_PREFIX.len() + BODY_LEN];
        assert!(body.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(checksum(body), text[API_KEY_PREFIX.len() + BODY_LEN..]);
        // A key of the format before issue times (43 random characters,
        // unsalted checksum), as earlier versions issued them.
        // (Its checksum computed independently: SHA-256 of the body, first
        // 32 bits in base62.)
        let earlier = "cbk_8jDOhIBBWBgbQC6aPCUIVCvKJSWKVH2MJhm3G8ckKXZ0Y9erO";
        let parsed = ApiKeySecret::parse(earlier).expect("earlier keys still parse");
        assert_eq!(parsed.issued_at(), None);
        assert_eq!(parsed.display_prefix(), "cbk_8jDOhIBB");
    }

    #[test]
    fn a_changed_character_fails_the_checksum() {
        let key = ApiKeySecret::generate();
        let mut bytes = key.expose().as_bytes().to_vec();
        bytes[10] = if bytes[10] == b'a' { b'b' } else { b'a' };
        assert!(ApiKeySecret::parse(std::str::from_utf8(&bytes).unwrap()).is_none());
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in ["", "cbk_", "sk_live_abc", &"x".repeat(10_000), "cbk_ééé"] {
            assert!(ApiKeySecret::parse(bad).is_none(), "{bad:?}");
        }
        let key = ApiKeySecret::generate();
        assert!(!format!("{key:?}").contains("cbk_"));
    }
}
