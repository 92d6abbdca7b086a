//! AuthService: login, refresh-token rotation with re-use detection, logout
//! and "who am I".

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::{convert, AppState};
use crate::auth::caller;
use crate::db::models::{NewRefreshToken, RefreshToken, User};
use crate::db::sql_types::Timestamp;
use crate::db::DbConnection;
use crate::domain::{Email, Password, RefreshTokenId, Role, TokenFamilyId, UserId};
use crate::error::{AppError, AppResult, FieldViolation, Violations};
use crate::proto;
use crate::proto::auth_service_server::AuthService;

/// One message for every failed login, so accounts cannot be enumerated.
const LOGIN_FAILED: &str = "invalid email or password";
const REFRESH_PREFIX: &str = "cbr_";

/// The AuthService implementation.
pub struct Auth {
    state: Arc<AppState>,
}

impl Auth {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    /// A new access token and a new refresh token in `family_id`.
    async fn issue_pair(
        &self,
        conn: &mut DbConnection,
        user_id: UserId,
        role: Role,
        family_id: TokenFamilyId,
    ) -> AppResult<TokenPair> {
        let access = self
            .state
            .tokens
            .issue(user_id, role)
            .map_err(AppError::Internal)?;
        let refresh_token = format!(
            "{REFRESH_PREFIX}{}",
            Alphanumeric.sample_string(&mut rand::rngs::OsRng, 43)
        );
        let refresh_expires_at = Utc::now() + self.state.policy.refresh_token_ttl;
        RefreshToken::insert(
            conn,
            NewRefreshToken {
                id: RefreshTokenId::generate(),
                user_id,
                family_id,
                token_hash: &digest(&refresh_token),
                expires_at: Timestamp(refresh_expires_at),
            },
        )
        .await?;
        Ok(TokenPair {
            access_token: access.token,
            access_expires_at: access.expires_at,
            refresh_token,
            refresh_expires_at,
        })
    }
}

struct TokenPair {
    access_token: String,
    access_expires_at: DateTime<Utc>,
    refresh_token: String,
    refresh_expires_at: DateTime<Utc>,
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn parse_refresh_token(value: &str) -> Result<&str, FieldViolation> {
    if value.is_empty() {
        return Err(FieldViolation::new("refresh_token", "is required"));
    }
    if value.len() > 256 {
        return Err(FieldViolation::new("refresh_token", "is too long"));
    }
    Ok(value)
}

#[tonic::async_trait]
impl AuthService for Auth {
    async fn login(
        &self,
        request: Request<proto::LoginRequest>,
    ) -> Result<Response<proto::LoginResponse>, Status> {
        let address = request.remote_addr().map(|addr| addr.ip());
        let request = request.into_inner();
        let mut violations = Violations::new();
        let email = violations.check(Email::parse("email", &request.email));
        let password = violations.check(Password::presented("password", request.password));
        violations.finish()?;
        let (Some(email), Some(password)) = (email, password) else {
            unreachable!("finish() returned Ok, so every field parsed");
        };

        // Refuse before hashing anything: the throttle protects the CPU too.
        if let Err(retry_after) = self.state.throttle.check(email.as_str(), address) {
            return Err(AppError::ResourceExhausted {
                message: "too many failed logins; retry later".into(),
                retry_after,
            }
            .into());
        }

        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let user = User::find_by_email(&mut conn, email.as_str())
            .await
            .map_err(AppError::from)?;
        // Release the connection during the slow hash.
        drop(conn);
        let stored_hash = user.as_ref().map(|u| u.hashed_password.clone());
        let verified = self
            .state
            .hasher
            .verify(password, stored_hash)
            .await
            .map_err(AppError::Internal)?;
        let Some(user) = user.filter(|_| verified) else {
            self.state.throttle.record_failure(email.as_str(), address);
            tracing::info!("login failed");
            return Err(AppError::Unauthenticated(LOGIN_FAILED.into()).into());
        };
        self.state.throttle.record_success(email.as_str());

        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let pair = self
            .issue_pair(&mut conn, user.id, user.role(), TokenFamilyId::generate())
            .await?;
        tracing::info!(user_id = %user.id, "login succeeded");
        Ok(Response::new(proto::LoginResponse {
            access_token: pair.access_token,
            access_token_expire_time: Some(convert::timestamp(pair.access_expires_at)),
            refresh_token: pair.refresh_token,
            refresh_token_expire_time: Some(convert::timestamp(pair.refresh_expires_at)),
            token_type: "Bearer".into(),
        }))
    }

    async fn refresh_token(
        &self,
        request: Request<proto::RefreshTokenRequest>,
    ) -> Result<Response<proto::RefreshTokenResponse>, Status> {
        let request = request.into_inner();
        let presented = parse_refresh_token(&request.refresh_token).map_err(AppError::from)?;
        let invalid = || AppError::Unauthenticated("refresh token is invalid".into());

        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let now = Utc::now();
        let token = RefreshToken::find_by_hash(&mut conn, &digest(presented))
            .await
            .map_err(AppError::from)?
            .ok_or_else(invalid)?;
        if token.revoked_at.is_some() {
            return Err(AppError::Unauthenticated("refresh token was revoked".into()).into());
        }
        if token.expires_at <= now {
            return Err(AppError::Unauthenticated("refresh token expired".into()).into());
        }
        // mark_used is atomic: of two concurrent refreshes only one wins; the
        // other, like any replay of a rotated token, revokes the family.
        let first_use = token.used_at.is_none()
            && RefreshToken::mark_used(&mut conn, token.id, now)
                .await
                .map_err(AppError::from)?;
        if !first_use {
            RefreshToken::revoke_family(&mut conn, token.family_id, now)
                .await
                .map_err(AppError::from)?;
            tracing::warn!(user_id = %token.user_id, "refresh token re-use detected; session revoked");
            return Err(AppError::Unauthenticated(
                "refresh token was already used; the session has been revoked, log in again".into(),
            )
            .into());
        }
        let user = User::find(&mut conn, token.user_id)
            .await
            .map_err(AppError::from)?
            .ok_or_else(invalid)?;
        let pair = self
            .issue_pair(&mut conn, user.id, user.role(), token.family_id)
            .await?;
        Ok(Response::new(proto::RefreshTokenResponse {
            access_token: pair.access_token,
            access_token_expire_time: Some(convert::timestamp(pair.access_expires_at)),
            refresh_token: pair.refresh_token,
            refresh_token_expire_time: Some(convert::timestamp(pair.refresh_expires_at)),
            token_type: "Bearer".into(),
        }))
    }

    async fn logout(
        &self,
        request: Request<proto::LogoutRequest>,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let presented = parse_refresh_token(&request.refresh_token).map_err(AppError::from)?;
        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let token = RefreshToken::find_by_hash(&mut conn, &digest(presented))
            .await
            .map_err(AppError::from)?;
        // Someone else's token is treated like an unknown one: nothing to
        // revoke, and nothing learned about it.
        if let Some(token) = token.filter(|t| caller.may_act_for(t.user_id)) {
            RefreshToken::revoke_family(&mut conn, token.family_id, Utc::now())
                .await
                .map_err(AppError::from)?;
            tracing::info!(user_id = %token.user_id, "logged out");
        }
        Ok(Response::new(proto::LogoutResponse {}))
    }

    async fn get_current_user(
        &self,
        request: Request<proto::GetCurrentUserRequest>,
    ) -> Result<Response<proto::GetCurrentUserResponse>, Status> {
        let caller = caller(&request)?;
        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let user = User::find(&mut conn, caller.user_id)
            .await
            .map_err(AppError::from)?
            .ok_or(AppError::NotFound("user"))?;
        Ok(Response::new(proto::GetCurrentUserResponse {
            user: Some(convert::user(user)),
        }))
    }
}
