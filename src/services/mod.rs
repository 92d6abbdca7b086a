//! The tonic services. Each file is one service and reads top to bottom:
//! the handlers (parse the request into a domain command, run one
//! operation, convert its result), then the operations themselves, which
//! return [`AppResult`](crate::error::AppResult) and are callable without
//! tonic. `Status` appears only at the handlers' final `?`.

pub mod api_keys;
pub mod auth;
pub mod chatbots;
pub mod convert;
pub mod status;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{LoginThrottle, PasswordHasher, Sessions, TokenKeys};
use crate::db::Database;
use crate::error::{AppError, AppResult};
use crate::hot_path::{ApiKeyCache, CacheInvalidation, ChatbotReads, LastUsedRecorder};
use crate::rate_limit::RateLimits;

/// Policy knobs the handlers need.
#[derive(Debug, Clone)]
pub struct Policy {
    pub allow_signup: bool,
    pub allow_private_llm_endpoints: bool,
    pub refresh_token_ttl: Duration,
    pub max_active_api_keys_per_chatbot: i64,
}

/// Everything the operations share.
pub struct AppState {
    pub db: Database,
    pub hasher: PasswordHasher,
    pub tokens: Arc<TokenKeys>,
    pub throttle: LoginThrottle,
    pub sessions: Sessions,
    pub last_used: LastUsedRecorder,
    pub api_key_cache: Arc<ApiKeyCache>,
    /// Every change to a cached row commits through here.
    pub caches: CacheInvalidation,
    pub chatbot_reads: ChatbotReads,
    pub rate_limits: RateLimits,
    pub policy: Policy,
}

/// What a delete of a row that may be gone answers: NOT_FOUND when no row
/// matched.
fn found(deleted: bool, what: &'static str) -> AppResult<()> {
    if deleted {
        Ok(())
    } else {
        Err(AppError::NotFound(what))
    }
}
