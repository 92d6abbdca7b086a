//! AuthService: login, refresh-token rotation with re-use detection, logout
//! and "who am I".

use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;
use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::{convert, AppState};
use crate::auth::{caller, LoginThrottle};
use crate::db::models::{NewRefreshToken, RefreshToken, Session, User};
use crate::db::sql_types::Timestamp;
use crate::db::{DbConnection, Invalidation};
use crate::domain::{Email, Password, RefreshTokenId, Role, SessionId, UserId};
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

    /// A new access token and a new refresh token in session `family_id`.
    async fn issue_pair(
        &self,
        conn: &mut DbConnection,
        user_id: UserId,
        role: Role,
        family_id: SessionId,
    ) -> AppResult<TokenPair> {
        let access = self
            .state
            .tokens
            .issue(user_id, family_id, role)
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

/// Ends a session in one transaction: its refresh tokens, its row, and the
/// notification that makes every replica refuse its access tokens (sent at
/// commit, so never for a change that rolled back). Then drops it here.
async fn end_session(
    state: &AppState,
    conn: &mut DbConnection,
    session: SessionId,
) -> AppResult<()> {
    let now = Utc::now();
    state
        .commit_and_invalidate(conn, Invalidation::Session(session), |conn| {
            async move {
                RefreshToken::revoke_family(conn, session, now).await?;
                Session::revoke(conn, session, now).await?;
                Ok(())
            }
            .scope_boxed()
        })
        .await
}

/// What a presented refresh token is, before any lookup.
enum PresentedRefreshToken<'a> {
    /// Could be one of ours.
    Plausible(&'a str),
    /// Cannot be one of ours (too long, wrong shape): an unknown token.
    Unknown,
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

/// Missing is INVALID_ARGUMENT; anything else that is not one of ours (an
/// access token sent by mistake, say) is just an unknown token, which the
/// caller answers as such (UNAUTHENTICATED on refresh).
fn parse_refresh_token(value: &str) -> Result<PresentedRefreshToken<'_>, FieldViolation> {
    if value.is_empty() {
        return Err(FieldViolation::new("refresh_token", "is required"));
    }
    if value.len() > 256 || !value.starts_with(REFRESH_PREFIX) {
        return Ok(PresentedRefreshToken::Unknown);
    }
    Ok(PresentedRefreshToken::Plausible(value))
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

        // Reserve the check before hashing anything: the budget is shared by
        // concurrent calls and replicas, and it protects the CPU too.
        let reservation = self.state.throttle.reserve(email.as_str(), address).await?;

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
            // The reservation stays spent: a wrong password.
            tracing::info!("login failed");
            return Err(AppError::Unauthenticated(LOGIN_FAILED.into()).into());
        };
        let session = SessionId::generate();
        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let (user_id, role) = (user.id, user.role());
        let checked_hash = &user.hashed_password;
        let reservation = &reservation;
        let pair = conn
            .transaction(|conn| {
                async move {
                    if !User::lock_if_password_unchanged(conn, user_id, checked_hash).await? {
                        // The password changed while this one was checked.
                        return Err(AppError::Unauthenticated(LOGIN_FAILED.into()));
                    }
                    LoginThrottle::refund(conn, reservation).await?;
                    Session::insert(conn, session, user_id).await?;
                    self.issue_pair(conn, user_id, role, session).await
                }
                .scope_boxed()
            })
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
        let invalid = || AppError::Unauthenticated("refresh token is invalid".into());
        let PresentedRefreshToken::Plausible(presented) =
            parse_refresh_token(&request.refresh_token).map_err(AppError::from)?
        else {
            return Err(invalid().into());
        };

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
            end_session(&self.state, &mut conn, token.family_id).await?;
            tracing::warn!(user_id = %token.user_id, "refresh token re-use detected; session revoked");
            return Err(AppError::Unauthenticated(
                "refresh token was already used; the session has been revoked, log in again".into(),
            )
            .into());
        }
        // Under the session's lock: a logout or password change ending it
        // meanwhile either comes first (refused here) or waits for this.
        let session = token.family_id;
        let pair = conn
            .transaction(|conn| {
                async move {
                    if !Session::lock_live(conn, session).await? {
                        return Err(AppError::Unauthenticated(
                            "the session has ended; log in again".into(),
                        ));
                    }
                    let user = User::find(conn, token.user_id).await?.ok_or_else(invalid)?;
                    self.issue_pair(conn, user.id, user.role(), session).await
                }
                .scope_boxed()
            })
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
        let PresentedRefreshToken::Plausible(presented) =
            parse_refresh_token(&request.refresh_token).map_err(AppError::from)?
        else {
            // Nothing of ours to end.
            return Ok(Response::new(proto::LogoutResponse {}));
        };
        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let token = RefreshToken::find_by_hash(&mut conn, &digest(presented))
            .await
            .map_err(AppError::from)?;
        // Someone else's token is treated like an unknown one: nothing to
        // revoke, and nothing learned about it.
        if let Some(token) = token.filter(|t| caller.may_act_for(t.user_id)) {
            end_session(&self.state, &mut conn, token.family_id).await?;
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
