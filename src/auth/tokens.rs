//! Access tokens: HS256 JWTs with the algorithm pinned and issuer, audience
//! and expiry checked on every call. A previous key verifies but never signs,
//! so keys can be rotated without logging everyone out.
//!
//! A token's signature and claims are checked the first time it is
//! presented; what it names is then remembered with its expiry
//! ([`VerifiedTokens`]), which is checked again at every call. The same
//! string always verifies the same way while the process's keys are the
//! same, and revocation is its session's, checked after this.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::SecretSlice;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Role, SessionId, UserId};

pub const ISSUER: &str = "chatbot-backend";
pub const AUDIENCE: &str = "chatbot-backend";

/// What an access token asserts. `role` is the role at issue time, for
/// clients' convenience; authorization uses the current one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// The session the token was issued in; it dies with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

/// A freshly signed token and its expiry.
pub struct AccessToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Signing and verification keys. `Debug` prints no key material.
#[derive(Clone)]
pub struct TokenKeys {
    signing: EncodingKey,
    verifying: Vec<DecodingKey>,
    validation: Validation,
    access_ttl: Duration,
    verified: Arc<VerifiedTokens>,
}

/// Tokens verified lately, by their whole text, and what each names. A
/// call's token is otherwise base64, JSON and an HMAC: about a tenth of a
/// cached read's CPU. Bounded: past [`VerifiedTokens::CAPACITY`] tokens it
/// starts again empty (a forgotten token is verified again). Only tokens
/// that verified are kept, so a made-up token costs what it always did.
#[derive(Default)]
struct VerifiedTokens {
    tokens: Mutex<HashMap<Box<str>, Verified>>,
}

#[derive(Clone, Copy)]
struct Verified {
    user_id: UserId,
    session_id: SessionId,
    /// The token's `exp`, in seconds since the epoch.
    expires: i64,
}

impl VerifiedTokens {
    /// About 350 bytes each.
    const CAPACITY: usize = 10_000;

    fn get(&self, token: &str) -> Option<Verified> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.get(token).copied()
    }

    fn insert(&self, token: &str, verified: Verified) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= Self::CAPACITY {
            tokens.clear();
        }
        tokens.insert(token.into(), verified);
    }
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys").finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub fn new(secret: &[u8], previous: Option<&[u8]>, access_ttl: Duration) -> Self {
        let mut verifying = vec![DecodingKey::from_secret(secret)];
        verifying.extend(previous.map(DecodingKey::from_secret));
        // Only HS256: "none" and every other algorithm fail validation.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.leeway = 5;
        Self {
            signing: EncodingKey::from_secret(secret),
            verifying,
            validation,
            access_ttl,
            verified: Arc::default(),
        }
    }

    /// A random 32-byte key for a server started without SECRET_KEY.
    pub fn ephemeral_secret() -> SecretSlice<u8> {
        let mut secret = vec![0_u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        SecretSlice::from(secret)
    }

    pub fn issue(
        &self,
        user_id: UserId,
        session_id: SessionId,
        role: Role,
    ) -> anyhow::Result<AccessToken> {
        let now = Utc::now();
        let expires_at = now + self.access_ttl;
        let claims = Claims {
            sub: user_id.to_string(),
            sid: Some(session_id.to_string()),
            role,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.signing)?;
        Ok(AccessToken { token, expires_at })
    }

    /// The user and session a token names, or why it is refused (safe to
    /// show clients).
    pub fn verify(&self, token: &str) -> Result<(UserId, SessionId), &'static str> {
        if let Some(verified) = self.verified.get(token) {
            // As jsonwebtoken judges `exp`, with the same leeway.
            let leeway = i64::try_from(self.validation.leeway).unwrap_or(i64::MAX);
            if verified.expires < Utc::now().timestamp().saturating_sub(leeway) {
                return Err("access token expired");
            }
            return Ok((verified.user_id, verified.session_id));
        }
        let verified = self.verify_signed(token)?;
        self.verified.insert(token, verified);
        Ok((verified.user_id, verified.session_id))
    }

    /// [`Self::verify`] from the token's text: its signature and claims.
    fn verify_signed(&self, token: &str) -> Result<Verified, &'static str> {
        use jsonwebtoken::errors::ErrorKind;
        let mut last_error = "invalid access token";
        for key in &self.verifying {
            match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                Ok(data) => {
                    let user_id = Uuid::parse_str(&data.claims.sub)
                        .map(UserId)
                        .map_err(|_| "invalid access token subject")?;
                    // Tokens from before sessions existed name none; a
                    // refresh issues one that does.
                    let session_id = data
                        .claims
                        .sid
                        .as_deref()
                        .and_then(|sid| Uuid::parse_str(sid).ok())
                        .map(SessionId)
                        .ok_or("access token names no session; refresh it or log in again")?;
                    return Ok(Verified {
                        user_id,
                        session_id,
                        expires: data.claims.exp,
                    });
                }
                Err(error) => {
                    last_error = match error.kind() {
                        ErrorKind::ExpiredSignature => "access token expired",
                        ErrorKind::InvalidSignature => "access token signature is invalid",
                        ErrorKind::InvalidAudience => "access token is for another audience",
                        ErrorKind::InvalidIssuer => "access token is from another issuer",
                        ErrorKind::InvalidAlgorithm => "access token algorithm is not HS256",
                        ErrorKind::MissingRequiredClaim(_) => "access token lacks a required claim",
                        _ => "malformed access token",
                    };
                    // Only a bad signature can be fixed by the next key.
                    if !matches!(error.kind(), ErrorKind::InvalidSignature) {
                        break;
                    }
                }
            }
        }
        Err(last_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(
            b"0123456789abcdef0123456789abcdef",
            None,
            Duration::from_secs(60),
        )
    }

    /// A token signed with `keys`' key, expiring `expires_in` seconds from now.
    fn token_expiring_in(keys: &TokenKeys, expires_in: i64) -> String {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: Uuid::new_v4().to_string(),
            sid: Some(Uuid::new_v4().to_string()),
            role: Role::User,
            iat: now,
            exp: now + expires_in,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.signing).unwrap()
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let keys = keys();
        // Expired four seconds ago: within the five seconds of leeway.
        let token = token_expiring_in(&keys, -4);
        let first = keys.verify(&token).unwrap();
        assert_eq!(keys.verify(&token).unwrap(), first);
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(keys.verify(&token), Err("access token expired"));
    }

    #[test]
    fn a_remembered_token_vouches_for_no_other_text() {
        let keys = keys();
        let token = token_expiring_in(&keys, 60);
        let issued = keys
            .issue(
                UserId(Uuid::new_v4()),
                SessionId(Uuid::new_v4()),
                Role::User,
            )
            .unwrap();
        assert!(keys.verify(&token).is_ok());
        assert!(keys.verify(&issued.token).is_ok());
        // The first token's claims under the second's signature.
        let (claims, _) = token.rsplit_once('.').unwrap();
        let (_, signature) = issued.token.rsplit_once('.').unwrap();
        let forged = format!("{claims}.{signature}");
        assert_eq!(
            keys.verify(&forged),
            Err("access token signature is invalid")
        );
        let other = TokenKeys::new(b"another key, thirty-two bytes ok", None, Duration::ZERO);
        assert!(other.verify(&token).is_err());
    }
}
