//! The API key format: `cbk_` + 43 base62 characters from the OS CSPRNG
//! (256 bits) + a 6-character base62 checksum. The fixed prefix lets secret
//! scanners find leaked keys; the checksum lets VerifyApiKey reject typos and
//! garbage without a database query. Only the SHA-256 digest is stored.

use std::fmt;

use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

/// Every key starts with this.
pub const API_KEY_PREFIX: &str = "cbk_";
const BODY_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
const KEY_LEN: usize = API_KEY_PREFIX.len() + BODY_LEN + CHECKSUM_LEN;
/// Characters of the key shown in lists: the prefix plus 8 of the body,
/// too few (48 bits) to help guess the rest.
const DISPLAY_PREFIX_LEN: usize = API_KEY_PREFIX.len() + 8;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A plaintext API key. `Debug` redacts it; only `expose` reveals it, once,
/// for the response that creates it.
#[derive(Clone)]
pub struct ApiKeySecret(String);

/// SHA-256 of a key: what the database stores and is searched by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKeyDigest(pub [u8; 32]);

impl ApiKeySecret {
    pub fn generate() -> Self {
        let body = Alphanumeric.sample_string(&mut OsRng, BODY_LEN);
        let checksum = checksum(&body);
        Self(format!("{API_KEY_PREFIX}{body}{checksum}"))
    }

    /// Accepts only well-formed keys with a matching checksum.
    pub fn parse(presented: &str) -> Option<Self> {
        if presented.len() != KEY_LEN || !presented.is_ascii() {
            return None;
        }
        let rest = presented.strip_prefix(API_KEY_PREFIX)?;
        let (body, sum) = rest.split_at(BODY_LEN);
        if !body.bytes().all(|b| b.is_ascii_alphanumeric()) || checksum(body) != sum {
            return None;
        }
        Some(Self(presented.to_owned()))
    }

    pub fn digest(&self) -> ApiKeyDigest {
        ApiKeyDigest(Sha256::digest(self.0.as_bytes()).into())
    }

    pub fn display_prefix(&self) -> &str {
        &self.0[..DISPLAY_PREFIX_LEN]
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn checksum(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let mut value = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        assert!(!format!("{:?}", ApiKeySecret::generate()).contains("cbk_"));
    }
}
