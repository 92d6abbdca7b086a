//! AuthService: login, refresh-token rotation with re-use detection, logout
//! and "who am I".

use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;
use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};
use tonic::Request;

use super::{audit, convert, no_fields, AppState, Origin, Rpc};
use crate::auth::{Caller, HashSlot, LoginThrottle, Reservation};
use crate::db::models::{AuditActor, NewRefreshToken, RefreshToken, Session, User};
use crate::db::sql_types::Timestamp;
use crate::db::{DbConnection, Invalidation, Written};
use crate::domain::{
    AuditAction, AuditRecord, AuditTarget, Email, Login, Password, RefreshTokenId, Role, SessionId,
    UserId,
};
use crate::error::{parsed, AppError, AppResult, FieldViolation};
use crate::proto;
use crate::proto::auth_service_server::AuthService;
use crate::proto::{
    GetCurrentUserRequest, GetCurrentUserResponse, LoginRequest, LoginResponse, LogoutRequest,
    LogoutResponse, RefreshTokenRequest, RefreshTokenResponse,
};

/// One message for every failed login, so accounts cannot be enumerated.
const LOGIN_FAILED: &str = "invalid email or password";
const REFRESH_PREFIX: &str = "cbr_";

/// The AuthService implementation.
pub struct Auth(pub Arc<AppState>);

#[tonic::async_trait]
impl AuthService for Auth {
    async fn login(&self, request: Request<LoginRequest>) -> Rpc<LoginResponse> {
        self.0.serve_public(request, Login::try_from, login).await
    }

    async fn refresh_token(
        &self,
        request: Request<RefreshTokenRequest>,
    ) -> Rpc<RefreshTokenResponse> {
        let parse =
            |message: RefreshTokenRequest| PresentedRefreshToken::parse(message.refresh_token);
        self.0.serve_public(request, parse, refresh_token).await
    }

    async fn logout(&self, request: Request<LogoutRequest>) -> Rpc<LogoutResponse> {
        let parse = |message: LogoutRequest| PresentedRefreshToken::parse(message.refresh_token);
        self.0.serve(request, parse, logout).await
    }

    async fn get_current_user(
        &self,
        request: Request<GetCurrentUserRequest>,
    ) -> Rpc<GetCurrentUserResponse> {
        let current_user =
            async |state: &AppState, caller: &Caller, ()| get_current_user(state, caller).await;
        self.0.serve(request, no_fields, current_user).await
    }
}

impl TryFrom<proto::LoginRequest> for Login {
    type Error = AppError;

    fn try_from(request: proto::LoginRequest) -> AppResult<Self> {
        let (email, password) = parsed((
            Email::parse("email", &request.email),
            Password::presented("password", request.password),
        ))?;
        Ok(Self { email, password })
    }
}

/// What a presented refresh token is, before any lookup.
pub enum PresentedRefreshToken {
    /// Could be one of ours.
    Plausible(String),
    /// Cannot be one of ours (too long, wrong shape): an unknown token.
    Unknown,
}

impl PresentedRefreshToken {
    /// Missing is INVALID_ARGUMENT; anything else that is not one of ours
    /// (an access token sent by mistake, say) is just an unknown token,
    /// which the caller answers as such (UNAUTHENTICATED on refresh).
    fn parse(value: String) -> Result<Self, FieldViolation> {
        if value.is_empty() {
            return Err(FieldViolation::new("refresh_token", "is required"));
        }
        if value.len() > 256 || !value.starts_with(REFRESH_PREFIX) {
            return Ok(Self::Unknown);
        }
        Ok(Self::Plausible(value))
    }
}

/// An access token and a refresh token of one session.
pub struct TokenPair {
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
}

/// LoginResponse and RefreshTokenResponse carry the same pair.
macro_rules! token_responses {
    ($($response:ident),*) => {$(
        impl From<TokenPair> for $response {
            fn from(pair: TokenPair) -> Self {
                Self {
                    access_token: pair.access_token,
                    access_token_expire_time: Some(convert::timestamp(pair.access_expires_at)),
                    refresh_token: pair.refresh_token,
                    refresh_token_expire_time: Some(convert::timestamp(pair.refresh_expires_at)),
                    token_type: "Bearer".into(),
                }
            }
        }
    )*};
}

token_responses!(LoginResponse, RefreshTokenResponse);

/// Starts a session. A place in the hashing queue is claimed first, so a
/// server busy hashing refuses the call before it touches the database or
/// the caller's login budget. The check is then reserved from the login
/// budget before anything is hashed (the budget is shared by concurrent
/// calls and replicas, and it protects the CPU too); a right password gives
/// it back.
pub async fn login(state: &AppState, origin: &Origin, cmd: Login) -> AppResult<TokenPair> {
    let mut slot = Some(state.hasher.claim_slot()?);
    let reservation = state
        .throttle
        .reserve(cmd.email.as_str(), origin.address)
        .await?;
    // A hash that changed while this call checked it is checked again, once:
    // a concurrent login with the right password may have upgraded it.
    for _ in 0..2 {
        let slot = match slot.take() {
            Some(claimed) => claimed,
            None => state.hasher.claim_slot()?,
        };
        if let SignIn::Done(pair) = sign_in(state, origin, &cmd, &reservation, slot).await? {
            return Ok(pair);
        }
    }
    Err(AppError::Unauthenticated(LOGIN_FAILED.into()))
}

/// How one attempt at a login ended, short of an error.
enum SignIn {
    Done(TokenPair),
    /// The hash checked was replaced before the session could start.
    HashChanged,
}

/// Checks the password against the stored hash and starts a session. A
/// hash made with older settings is replaced by one at the current cost in
/// the same transaction (best effort: a busy hashing queue leaves it for
/// the next login). No connection is held through the slow hashes.
async fn sign_in(
    state: &AppState,
    origin: &Origin,
    cmd: &Login,
    reservation: &Reservation,
    slot: HashSlot,
) -> AppResult<SignIn> {
    let user = {
        let mut conn = state.db.conn().await?;
        User::find_by_email(&mut conn, cmd.email.as_str()).await?
    };
    let stored_hash = user.as_ref().map(|u| u.hashed_password.clone());
    let verified = state
        .hasher
        .verify_in(slot, cmd.password.clone(), stored_hash)
        .await?;
    let account = user.as_ref().map(|user| user.id);
    let Some(user) = user.filter(|_| verified) else {
        // The reservation stays spent: a wrong password.
        tracing::info!("login failed");
        let record = AuditRecord::new(
            AuditAction::SessionLoginFailed,
            AuditTarget::account(account),
        );
        audit::record_refusal(state, &audit::public_actor(origin, None), &record).await;
        return Err(AppError::Unauthenticated(LOGIN_FAILED.into()));
    };
    let upgraded = match state.hasher.is_outdated(&user.hashed_password) {
        false => None,
        true => match state.hasher.hash(cmd.password.clone()).await {
            Ok(hash) => Some(hash),
            Err(error) => {
                tracing::warn!(%error, "could not upgrade a password hash; the next login will try again");
                None
            }
        },
    };
    let session = SessionId::generate();
    let mut conn = state.db.conn().await?;
    let (user_id, role) = (user.id, user.role());
    let (checked_hash, upgraded) = (&user.hashed_password, upgraded.as_deref());
    let actor = audit::acting_for_themselves(origin, user_id);
    // A new session: no cache holds it.
    let signed_in = state
        .write(&mut conn, actor, None, |conn| {
            async move {
                let unchanged = match upgraded {
                    Some(new_hash) => {
                        User::upgrade_hash_if_unchanged(conn, user_id, checked_hash, new_hash)
                            .await?
                    }
                    None => User::lock_if_password_unchanged(conn, user_id, checked_hash).await?,
                };
                if !unchanged {
                    return Ok(Written::unrecorded(SignIn::HashChanged));
                }
                LoginThrottle::refund(conn, reservation).await?;
                Session::insert(conn, session, user_id).await?;
                let pair = issue_pair(state, conn, user_id, role, session).await?;
                let record =
                    AuditRecord::new(AuditAction::SessionLogin, AuditTarget::user(user_id));
                Ok(Written::recorded(SignIn::Done(pair), record))
            }
            .scope_boxed()
        })
        .await?;
    if let SignIn::Done(_) = signed_in {
        tracing::info!(user_id = %user.id, upgraded_hash = upgraded.is_some(), "login succeeded");
    }
    Ok(signed_in)
}

/// Rotates a refresh token. A token used twice (a replay, or the loser of
/// two concurrent refreshes) ends its whole session.
pub async fn refresh_token(
    state: &AppState,
    origin: &Origin,
    presented: PresentedRefreshToken,
) -> AppResult<TokenPair> {
    let invalid = || AppError::Unauthenticated("refresh token is invalid".into());
    let PresentedRefreshToken::Plausible(presented) = presented else {
        return Err(invalid());
    };
    let mut conn = state.db.conn().await?;
    let now = Utc::now();
    let token = RefreshToken::find_by_hash(&mut conn, &digest(&presented))
        .await?
        .ok_or_else(invalid)?;
    if token.revoked_at.is_some() {
        return Err(AppError::Unauthenticated(
            "refresh token was revoked".into(),
        ));
    }
    if token.expires_at <= now {
        return Err(AppError::Unauthenticated("refresh token expired".into()));
    }
    let session = token.family_id;
    // A rotation is not audited (a replay is, below), and no cache holds
    // refresh tokens. Whoever presents a token is not known: no actor, only
    // the call.
    let actor = audit::public_actor(origin, None);
    let outcome = state
        .write(&mut conn, actor.clone(), None, |conn| {
            async move {
                // Marked used in the same transaction that issues the new
                // pair, so a failure below rolls it back and the client's
                // retry is not taken for a replay. The row lock makes it
                // atomic: of two concurrent refreshes only one wins. Token
                // rows before the session's, as end_session locks them.
                if token.used_at.is_some() || !RefreshToken::mark_used(conn, token.id, now).await? {
                    return Ok(Written::unrecorded(Refresh::Replayed));
                }
                // Under the session's lock: a logout or password change
                // ending it meanwhile either comes first (refused here) or
                // waits for this.
                if !Session::lock_live(conn, session).await? {
                    return Err(AppError::Unauthenticated(
                        "the session has ended; log in again".into(),
                    ));
                }
                let user = User::find(conn, token.user_id).await?.ok_or_else(invalid)?;
                let pair = issue_pair(state, conn, user.id, user.role(), session).await?;
                Ok(Written::unrecorded(Refresh::Issued(pair)))
            }
            .scope_boxed()
        })
        .await?;
    match outcome {
        Refresh::Issued(pair) => Ok(pair),
        // A rotated token presented again: whoever holds it, the session
        // is no longer safe.
        Refresh::Replayed => {
            // Whoever presented it is not known: no actor, only the call.
            let target = AuditTarget::user(token.user_id);
            let record = AuditRecord::new(AuditAction::SessionRefreshReuse, target);
            end_session(state, &mut conn, session, (actor, record)).await?;
            tracing::warn!(user_id = %token.user_id, "refresh token re-use detected; session revoked");
            Err(AppError::Unauthenticated(
                "refresh token was already used; the session has been revoked, log in again".into(),
            ))
        }
    }
}

/// What a refresh's transaction decided.
enum Refresh {
    Issued(TokenPair),
    Replayed,
}

/// Ends the token's session. Someone else's token is treated like an
/// unknown one: nothing to revoke, and nothing learned about it.
pub async fn logout(
    state: &AppState,
    caller: &Caller,
    presented: PresentedRefreshToken,
) -> AppResult<()> {
    // A service account has no session to end.
    caller.person()?;
    let PresentedRefreshToken::Plausible(presented) = presented else {
        // Nothing of ours to end.
        return Ok(());
    };
    let mut conn = state.db.conn().await?;
    let token = RefreshToken::find_by_hash(&mut conn, &digest(&presented)).await?;
    if let Some(token) = token.filter(|t| caller.may_act_for(t.user_id)) {
        let record = AuditRecord::new(AuditAction::SessionLogout, AuditTarget::user(token.user_id));
        end_session(
            state,
            &mut conn,
            token.family_id,
            (audit::actor(caller), record),
        )
        .await?;
        tracing::info!(user_id = %token.user_id, "logged out");
    }
    Ok(())
}

pub async fn get_current_user(state: &AppState, caller: &Caller) -> AppResult<User> {
    let mut conn = state.db.conn().await?;
    User::find(&mut conn, caller.person()?)
        .await?
        .ok_or(AppError::NotFound("user"))
}

/// A new access token and a new refresh token in session `family_id`.
async fn issue_pair(
    state: &AppState,
    conn: &mut DbConnection,
    user_id: UserId,
    role: Role,
    family_id: SessionId,
) -> AppResult<TokenPair> {
    let access = state
        .tokens
        .issue(user_id, family_id, role)
        .map_err(AppError::Internal)?;
    let refresh_token = format!(
        "{REFRESH_PREFIX}{}",
        Alphanumeric.sample_string(&mut rand::rngs::OsRng, 43)
    );
    let refresh_expires_at = Utc::now() + state.policy.refresh_token_ttl;
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

/// Ends a session in one transaction: its refresh tokens, its row, its
/// audit event, and the notification that makes every replica refuse its
/// access tokens (sent at commit, so never for a change that rolled back).
/// Then drops it here.
async fn end_session(
    state: &AppState,
    conn: &mut DbConnection,
    session: SessionId,
    (actor, record): (AuditActor, AuditRecord),
) -> AppResult<()> {
    let now = Utc::now();
    let stale = Some(Invalidation::Session(session));
    state
        .write(conn, actor, stale, |conn| {
            async move {
                RefreshToken::revoke_family(conn, session, now).await?;
                Session::revoke(conn, session, now).await?;
                Ok(Written::recorded((), record))
            }
            .scope_boxed()
        })
        .await
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}
