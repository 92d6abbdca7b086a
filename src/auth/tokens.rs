//! Access tokens: HS256 JWTs with the algorithm pinned and issuer, audience
//! and expiry checked on every call. A previous key verifies but never signs,
//! so keys can be rotated without logging everyone out.

use std::fmt;
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
                    return Ok((user_id, session_id));
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
