//! Bearer secrets other than API keys and access tokens: an invitation's
//! token, a service account's and a credit reservation's id. Each is a fixed prefix (so secret
//! scanners find leaked ones) and 43 base62 characters from the OS CSPRNG
//! (256 bits). Only the SHA-256 digest is stored; `Debug` redacts.

use std::fmt;
use std::marker::PhantomData;

use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

use super::FieldViolation;

const BODY_LEN: usize = 43;
/// Characters of the body shown after the prefix (48 bits): enough to tell
/// tokens apart in a list, too few to help guess the rest.
const SHOWN_BODY_LEN: usize = 8;

/// Which secret a [`SecretToken`] is.
pub trait TokenKind {
    const PREFIX: &'static str;
    const NAME: &'static str;
}

/// An invitation's token.
#[derive(Debug, Clone, Copy)]
pub struct Invitation;

impl TokenKind for Invitation {
    const PREFIX: &'static str = "cbi_";
    const NAME: &'static str = "an invitation token";
}

/// A service account's token.
#[derive(Debug, Clone, Copy)]
pub struct ServiceAccount;

impl TokenKind for ServiceAccount {
    const PREFIX: &'static str = "cbs_";
    const NAME: &'static str = "a service account token";
}

/// A credit reservation's id: whoever holds it may settle or release it.
#[derive(Debug, Clone, Copy)]
pub struct Reservation;

impl TokenKind for Reservation {
    const PREFIX: &'static str = "cbr_";
    const NAME: &'static str = "a reservation id";
}

pub type InvitationToken = SecretToken<Invitation>;
pub type ReservationToken = SecretToken<Reservation>;
pub type ServiceAccountToken = SecretToken<ServiceAccount>;

/// A plaintext secret of kind `K`, shown once in the response that creates
/// it.
pub struct SecretToken<K> {
    text: String,
    kind: PhantomData<K>,
}

impl<K: TokenKind> SecretToken<K> {
    pub fn generate() -> Self {
        Self::generate_with(&mut OsRng)
    }

    /// [`Self::generate`] drawing from `rng`: a create safe to retry draws
    /// from a stream it can replay.
    pub fn generate_with(rng: &mut impl rand::RngCore) -> Self {
        let body = Alphanumeric.sample_string(rng, BODY_LEN);
        Self {
            text: format!("{}{body}", K::PREFIX),
            kind: PhantomData,
        }
    }

    /// Whether `presented` claims to be of this kind (starts with its
    /// prefix), well-formed or not.
    pub fn has_prefix(presented: &str) -> bool {
        presented.starts_with(K::PREFIX)
    }

    /// Whether `presented` has this kind's shape (no database needed).
    pub fn is_well_formed(presented: &str) -> bool {
        presented.strip_prefix(K::PREFIX).is_some_and(|body| {
            body.len() == BODY_LEN && body.bytes().all(|b| b.is_ascii_alphanumeric())
        })
    }

    /// A well-formed token, or `None` for anything else (where a malformed
    /// token is answered like an unknown one).
    pub fn parse_lenient(presented: &str) -> Option<Self> {
        Self::is_well_formed(presented).then(|| Self {
            text: presented.to_owned(),
            kind: PhantomData,
        })
    }

    /// A well-formed token from request field `field`.
    pub fn parse(field: &str, presented: &str) -> Result<Self, FieldViolation> {
        if presented.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        if !Self::is_well_formed(presented) {
            return Err(FieldViolation::new(
                field,
                format!(
                    "is not {} ({} and {BODY_LEN} letters or digits)",
                    K::NAME,
                    K::PREFIX
                ),
            ));
        }
        Ok(Self {
            text: presented.to_owned(),
            kind: PhantomData,
        })
    }

    pub fn digest(&self) -> [u8; 32] {
        digest(&self.text)
    }

    /// The prefix and the first characters of the body: not secret.
    pub fn display_prefix(&self) -> &str {
        &self.text[..K::PREFIX.len() + SHOWN_BODY_LEN]
    }

    pub fn expose(&self) -> &str {
        &self.text
    }
}

/// SHA-256 of a presented token, as stored.
pub fn digest(presented: &str) -> [u8; 32] {
    Sha256::digest(presented.as_bytes()).into()
}

impl<K: TokenKind> fmt::Debug for SecretToken<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretToken({}<redacted>)", K::PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_back_show_only_their_prefix_and_never_print() {
        let token = ServiceAccountToken::generate();
        let parsed = ServiceAccountToken::parse("token", token.expose()).unwrap();
        assert_eq!(parsed.digest(), token.digest());
        assert_eq!(token.display_prefix().len(), 12);
        assert!(token.expose().starts_with(token.display_prefix()));
        assert!(!format!("{token:?}").contains(&token.expose()[4..]));
        assert!(ServiceAccountToken::parse("token", "cbs_short").is_err());
        assert!(ServiceAccountToken::parse("token", "").is_err());
        let invitation = InvitationToken::generate();
        assert!(ServiceAccountToken::parse("token", invitation.expose()).is_err());
        assert!(InvitationToken::is_well_formed(invitation.expose()));
    }
}
