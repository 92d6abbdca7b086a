//! The tonic service implementations: thin adapters that parse the request
//! into domain types, authorize the caller, run model queries and convert
//! the result. Shared state lives in [`AppState`].

pub mod api_key_cache;
pub mod api_keys;
pub mod auth;
pub mod chatbot_reads;
pub mod chatbots;
pub mod convert;
pub mod status;
pub mod users;

use std::time::Duration;

use crate::auth::{LoginThrottle, PasswordHasher, Sessions, TokenKeys};
use crate::db::{self, Database, DbConnection, Invalidation};
use crate::error::{AppError, AppResult, FieldViolation, Violations};
use api_key_cache::ApiKeyCache;
use api_keys::LastUsedRecorder;
use chatbot_reads::ChatbotReads;
use diesel_async::scoped_futures::{ScopedBoxFuture, ScopedFutureExt};

/// Policy knobs the handlers need.
#[derive(Debug, Clone)]
pub struct Policy {
    pub allow_signup: bool,
    pub allow_private_llm_endpoints: bool,
    pub refresh_token_ttl: Duration,
    pub max_active_api_keys_per_chatbot: i64,
}

/// Everything handlers share.
pub struct AppState {
    pub db: Database,
    pub hasher: PasswordHasher,
    pub tokens: std::sync::Arc<TokenKeys>,
    pub throttle: LoginThrottle,
    pub sessions: Sessions,
    pub last_used: LastUsedRecorder,
    pub api_key_cache: std::sync::Arc<ApiKeyCache>,
    pub chatbot_reads: ChatbotReads,
    pub rate_limits: crate::rate_limit::RateLimits,
    pub policy: Policy,
}

impl AppState {
    /// Runs `change` in a transaction that also tells every replica what it
    /// makes stale (PostgreSQL delivers the NOTIFY at commit, and only if it
    /// commits), then drops the same entries here before the RPC answers.
    /// Every change to a cached row goes through here, so no replica can
    /// keep serving a revoked key or an ended session because a
    /// notification was lost after its commit.
    pub async fn commit_and_invalidate<'a, R, F>(
        &self,
        conn: &mut DbConnection,
        stale: Invalidation,
        change: F,
    ) -> AppResult<R>
    where
        F: for<'r> FnOnce(&'r mut DbConnection) -> ScopedBoxFuture<'a, 'r, AppResult<R>>
            + Send
            + 'a,
        R: Send + 'a,
    {
        let result = conn
            .transaction(|conn| {
                async move {
                    let result = change(&mut *conn).await?;
                    db::notify_invalidation(conn, &stale).await?;
                    Ok::<_, AppError>(result)
                }
                .scope_boxed()
            })
            .await?;
        self.invalidate_here(&stale);
        Ok(result)
    }
}

impl AppState {
    /// Drops what a committed change made stale from this replica's caches
    /// (the local half of [`AppState::commit_and_invalidate`]; also what the
    /// listener does with other replicas' notifications).
    pub fn invalidate_here(&self, change: &Invalidation) {
        self.api_key_cache.invalidate(change);
        self.sessions.cache().invalidate(change);
    }
}

/// The paths of an update mask, each checked against the fields an update
/// may change; output-only and unknown paths are INVALID_ARGUMENT.
pub fn mask_paths<'a>(
    mask: Option<&'a prost_types::FieldMask>,
    updatable: &[&str],
    output_only: &[&str],
    violations: &mut Violations,
) -> Vec<&'a str> {
    let paths: Vec<&str> = mask
        .map(|mask| mask.paths.iter().map(String::as_str).collect())
        .unwrap_or_default();
    paths
        .into_iter()
        .filter(|path| {
            if updatable.contains(path) {
                true
            } else if output_only.contains(path) {
                violations.push(FieldViolation::new(
                    "update_mask",
                    format!("{path:?} is output only"),
                ));
                false
            } else {
                violations.push(FieldViolation::new(
                    "update_mask",
                    format!("{path:?} is not an updatable field; use one of {updatable:?}"),
                ));
                false
            }
        })
        .collect()
}
