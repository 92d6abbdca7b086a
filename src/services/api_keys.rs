//! ApiKeyService. Management RPCs are for the chatbot's owner or an admin;
//! VerifyApiKey is public (the key is the credential) and is the hot path:
//! malformed keys never reach the database, valid ones cost one indexed
//! read (none when cached), and last-used times are written in batches,
//! never per call (see [`crate::hot_path`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;
use tonic::Request;

use super::convert::{self, mask_paths};
use super::{audit, delete_row, required, usage, AppState, Origin, Rpc};
use crate::auth::Caller;
use crate::db::models::{
    ApiKey, Chatbot, KeyLimitChanges, KeyLimits, KeyWithLimits, NewApiKey, VerificationRecord,
};
use crate::db::sql_types::Timestamp;
use crate::db::{DbConnection, Invalidation};
use crate::domain::{
    parse_balance, parse_cost, ApiKeyFilter, ApiKeyId, ApiKeySecret, AuditAction, AuditChange,
    AuditRecord, AuditTarget, ChatbotId, CreateApiKey, CreditsChange, CreditsSetting, DisplayText,
    GetUsage, ListApiKeys, Page, PageRequest, RotateApiKey, UpdateApiKey, UsageEvent, UserId,
    VerifyApiKey,
};
use crate::error::{parsed, AppError, AppResult, FieldViolation, Violations};
use crate::hot_path::api_key_cache::Lookup;
use crate::hot_path::SpendOutcome;
use crate::proto::api_key_service_server::ApiKeyService;
use crate::proto::{self, VerifyApiKeyReason};
use crate::proto::{
    CreateApiKeyRequest, CreateApiKeyResponse, DeleteApiKeyRequest, DeleteApiKeyResponse,
    GetApiKeyRequest, GetApiKeyResponse, GetApiKeyUsageRequest, GetApiKeyUsageResponse,
    GetChatbotUsageRequest, GetChatbotUsageResponse, ListApiKeysRequest, ListApiKeysResponse,
    RevokeApiKeyRequest, RevokeApiKeyResponse, RotateApiKeyRequest, RotateApiKeyResponse,
    UpdateApiKeyRequest, UpdateApiKeyResponse, VerifyApiKeyRequest, VerifyApiKeyResponse,
};
use crate::rate_limit::RateKey;

/// Longest grace period RotateApiKey grants.
const MAX_GRACE_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);
const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// The ApiKeyService implementation.
pub struct ApiKeys(pub Arc<AppState>);

#[tonic::async_trait]
impl ApiKeyService for ApiKeys {
    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Rpc<CreateApiKeyResponse> {
        let parse = CreateApiKey::try_from;
        self.0.serve(request, parse, create_api_key).await
    }

    async fn get_api_key(&self, request: Request<GetApiKeyRequest>) -> Rpc<GetApiKeyResponse> {
        let parse = |message: GetApiKeyRequest| ApiKeyId::parse("id", message.id);
        self.0.serve(request, parse, get_api_key).await
    }

    async fn update_api_key(
        &self,
        request: Request<UpdateApiKeyRequest>,
    ) -> Rpc<UpdateApiKeyResponse> {
        let parse = UpdateApiKey::try_from;
        self.0.serve(request, parse, update_api_key).await
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Rpc<ListApiKeysResponse> {
        let parse = ListApiKeys::try_from;
        self.0.serve(request, parse, list_api_keys).await
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Rpc<RevokeApiKeyResponse> {
        let parse = |message: RevokeApiKeyRequest| ApiKeyId::parse("id", message.id);
        self.0.serve(request, parse, revoke_api_key).await
    }

    async fn rotate_api_key(
        &self,
        request: Request<RotateApiKeyRequest>,
    ) -> Rpc<RotateApiKeyResponse> {
        let parse = RotateApiKey::try_from;
        self.0.serve(request, parse, rotate_api_key).await
    }

    async fn delete_api_key(
        &self,
        request: Request<DeleteApiKeyRequest>,
    ) -> Rpc<DeleteApiKeyResponse> {
        let parse = |message: DeleteApiKeyRequest| ApiKeyId::parse("id", message.id);
        self.0.serve(request, parse, delete_api_key).await
    }

    async fn verify_api_key(
        &self,
        request: Request<VerifyApiKeyRequest>,
    ) -> Rpc<VerifyApiKeyResponse> {
        let verify = async |state: &AppState, _: &Origin, cmd| verify_api_key(state, cmd).await;
        let parse = VerifyApiKey::try_from;
        self.0.serve_public(request, parse, verify).await
    }

    async fn get_api_key_usage(
        &self,
        request: Request<GetApiKeyUsageRequest>,
    ) -> Rpc<GetApiKeyUsageResponse> {
        let parse = GetUsage::try_from;
        self.0.serve(request, parse, usage::get_api_key_usage).await
    }

    async fn get_chatbot_usage(
        &self,
        request: Request<GetChatbotUsageRequest>,
    ) -> Rpc<GetChatbotUsageResponse> {
        let parse = GetUsage::try_from;
        self.0.serve(request, parse, usage::get_chatbot_usage).await
    }
}

impl TryFrom<proto::CreateApiKeyRequest> for CreateApiKey {
    type Error = AppError;

    fn try_from(request: proto::CreateApiKeyRequest) -> AppResult<Self> {
        let now = Utc::now();
        let expires_at = optional(request.expire_time.as_ref(), |time| {
            future_time("expire_time", time, now)
        });
        let (chatbot_id, display_name, expires_at, rate_limit, credits) = parsed((
            ChatbotId::parse("chatbot_id", &request.chatbot_id),
            DisplayText::parse(
                "display_name",
                &request.display_name,
                MAX_DISPLAY_NAME_CHARS,
            ),
            expires_at,
            optional(request.rate_limit.as_ref(), |limit| {
                convert::parse_rate_limit("rate_limit", limit)
            }),
            optional(request.credits.as_ref(), |credits| {
                convert::parse_credits("credits", credits)
            }),
        ))?;
        Ok(Self {
            chatbot_id,
            display_name,
            expires_at,
            rate_limit,
            credits,
        })
    }
}

impl TryFrom<proto::ListApiKeysRequest> for ListApiKeys {
    type Error = AppError;

    /// The page token is bound to every filter of the request.
    fn try_from(request: proto::ListApiKeysRequest) -> AppResult<Self> {
        let expire_before = request
            .expire_before
            .as_ref()
            .map(|time| convert::parse_timestamp("expire_before", time))
            .transpose();
        let filter = format!(
            "api_keys|chatbot={}|revoked={}|before={}",
            request.chatbot_id,
            request.show_revoked,
            expire_before
                .as_ref()
                .ok()
                .copied()
                .flatten()
                .map_or(-1, |t| t.timestamp_micros()),
        );
        let (chatbot_id, expire_before, page) = parsed((
            ChatbotId::parse("chatbot_id", &request.chatbot_id),
            expire_before,
            PageRequest::parse(request.page_size, &request.page_token, &filter),
        ))?;
        Ok(Self {
            filter: ApiKeyFilter {
                chatbot_id,
                show_revoked: request.show_revoked,
                expire_before,
            },
            page,
        })
    }
}

impl TryFrom<proto::RotateApiKeyRequest> for RotateApiKey {
    type Error = AppError;

    fn try_from(request: proto::RotateApiKeyRequest) -> AppResult<Self> {
        let grace_period = match &request.grace_period {
            None => Ok(Duration::ZERO),
            Some(value) => convert::parse_duration("grace_period", value).and_then(|grace| {
                if grace > MAX_GRACE_PERIOD {
                    Err(FieldViolation::new(
                        "grace_period",
                        "must be at most 30 days",
                    ))
                } else {
                    Ok(grace)
                }
            }),
        };
        let (id, grace_period) = parsed((ApiKeyId::parse("id", request.id), grace_period))?;
        Ok(Self { id, grace_period })
    }
}

/// An optional field of a request, parsed if present.
fn optional<T, V>(
    field: Option<&T>,
    parse: impl FnOnce(&T) -> Result<V, FieldViolation>,
) -> Result<Option<V>, FieldViolation> {
    field.map(parse).transpose()
}

/// A time a request sets, which must be in the future.
fn future_time(
    field: &str,
    time: &prost_types::Timestamp,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, FieldViolation> {
    match convert::parse_timestamp(field, time)? {
        time if time <= now => Err(FieldViolation::new(field, "must be in the future")),
        time => Ok(time),
    }
}

impl TryFrom<proto::UpdateApiKeyRequest> for UpdateApiKey {
    type Error = AppError;

    /// A path in the mask whose field is unset clears it.
    fn try_from(request: proto::UpdateApiKeyRequest) -> AppResult<Self> {
        let key = required(request.api_key, "api_key")?;
        let mut violations = Violations::new();
        if request
            .update_mask
            .as_ref()
            .is_none_or(|mask| mask.paths.is_empty())
        {
            violations.push(FieldViolation::new(
                "update_mask",
                "name at least one field to change",
            ));
        }
        let paths = mask_paths(
            request.update_mask.as_ref(),
            &[
                "display_name",
                "expire_time",
                "rate_limit",
                "credits",
                "credits.remaining",
                "credits.refill",
            ],
            &[
                "id",
                "chatbot_id",
                "key_prefix",
                "revoked",
                "create_time",
                "revoke_time",
                "last_used_time",
                "credits.next_refill_time",
            ],
            &mut violations,
        );
        let credit_paths = paths
            .iter()
            .filter(|path| path.starts_with("credits"))
            .count();
        if credit_paths > 1 {
            violations.push(FieldViolation::new(
                "update_mask",
                "name credits, credits.remaining or credits.refill, not several",
            ));
        }
        let mut cmd = UpdateApiKey {
            id: ApiKeyId(key.id),
            display_name: None,
            expires_at: None,
            rate_limit: None,
            credits: CreditsChange::Unchanged,
        };
        violations.check(ApiKeyId::parse("api_key.id", key.id).map(|id| cmd.id = id));
        let now = Utc::now();
        for path in paths {
            match path {
                "display_name" => violations.check(
                    DisplayText::parse(
                        "api_key.display_name",
                        &key.display_name,
                        MAX_DISPLAY_NAME_CHARS,
                    )
                    .map(|name| cmd.display_name = Some(name)),
                ),
                "expire_time" => violations.check(
                    optional(key.expire_time.as_ref(), |time| {
                        future_time("api_key.expire_time", time, now)
                    })
                    .map(|time| cmd.expires_at = Some(time)),
                ),
                "rate_limit" => violations.check(
                    optional(key.rate_limit.as_ref(), |limit| {
                        convert::parse_rate_limit("api_key.rate_limit", limit)
                    })
                    .map(|limit| cmd.rate_limit = Some(limit)),
                ),
                "credits" => violations.check(
                    optional(key.credits.as_ref(), |credits| {
                        convert::parse_credits("api_key.credits", credits)
                    })
                    .map(|credits| cmd.credits = CreditsChange::Replace(credits)),
                ),
                "credits.remaining" => {
                    let remaining = key.credits.as_ref().map_or(0, |credits| credits.remaining);
                    violations.check(
                        parse_balance("api_key.credits.remaining", remaining)
                            .map(|remaining| cmd.credits = CreditsChange::Balance(remaining)),
                    );
                }
                "credits.refill" => violations.check(
                    optional(
                        key.credits.as_ref().and_then(|c| c.refill.as_ref()),
                        |refill| convert::parse_refill("api_key.credits.refill", refill),
                    )
                    .map(|refill| cmd.credits = CreditsChange::Refill(refill)),
                ),
                _ => {}
            }
        }
        violations.finish()?;
        Ok(cmd)
    }
}

impl TryFrom<proto::VerifyApiKeyRequest> for VerifyApiKey {
    type Error = AppError;

    /// A key that cannot be ours is an answer (malformed), not an error; a
    /// cost out of range is.
    fn try_from(request: proto::VerifyApiKeyRequest) -> AppResult<Self> {
        Ok(Self {
            cost: parse_cost("cost", request.cost)?,
            secret: ApiKeySecret::parse(&request.key),
        })
    }
}

/// A new key, with its secret: shown once, never stored.
pub struct NewKey {
    pub api_key: KeyWithLimits,
    pub secret: ApiKeySecret,
}

/// A rotation's replacement key (with its secret) and the key it replaced.
pub struct RotatedKey {
    pub api_key: KeyWithLimits,
    pub secret: ApiKeySecret,
    pub previous: KeyWithLimits,
}

impl From<NewKey> for CreateApiKeyResponse {
    fn from(created: NewKey) -> Self {
        Self {
            api_key: Some(created.api_key.into()),
            key: created.secret.expose().to_owned(),
        }
    }
}

impl From<RotatedKey> for RotateApiKeyResponse {
    fn from(rotated: RotatedKey) -> Self {
        Self {
            api_key: Some(rotated.api_key.into()),
            key: rotated.secret.expose().to_owned(),
            previous_api_key: Some(rotated.previous.into()),
        }
    }
}

/// VerifyApiKey's answer: what a valid key grants (and the balance it
/// leaves, for a key with credits), or why it is not valid.
#[derive(Debug)]
pub enum Verification {
    Valid {
        record: Arc<VerificationRecord>,
        credits_remaining: Option<i64>,
    },
    /// A key we hold, refused.
    Refused(Arc<VerificationRecord>, Rejection),
    /// No key we hold.
    Invalid(Rejection),
}

impl Verification {
    /// The key this answer counts for in its usage history, and as what
    /// (a call that cost `cost`): none for a key we do not hold.
    fn usage(&self, cost: i64) -> Option<(&VerificationRecord, UsageEvent)> {
        match self {
            Self::Valid {
                record,
                credits_remaining,
            } => {
                let credits_spent = if credits_remaining.is_some() { cost } else { 0 };
                Some((record, UsageEvent::Valid { credits_spent }))
            }
            Self::Refused(record, rejection) => {
                let event = match rejection {
                    Rejection::Revoked => UsageEvent::Revoked,
                    Rejection::Expired => UsageEvent::Expired,
                    Rejection::RateLimited { .. } => UsageEvent::RateLimited,
                    Rejection::UsageExceeded { .. } => UsageEvent::UsageExceeded,
                    Rejection::Malformed | Rejection::NotFound => return None,
                };
                Some((record, event))
            }
            Self::Invalid(_) => None,
        }
    }
}

/// Why a presented key is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not shaped like one of our keys; the database was not asked.
    Malformed,
    NotFound,
    Revoked,
    Expired,
    /// The key's own rate limit is reached until `retry_at`.
    RateLimited {
        retry_at: DateTime<Utc>,
    },
    /// The balance does not cover the cost; the next refill, if any.
    UsageExceeded {
        remaining: i64,
        next_refill: Option<DateTime<Utc>>,
    },
}

impl From<Rejection> for VerifyApiKeyReason {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::Malformed => VerifyApiKeyReason::Malformed,
            Rejection::NotFound => VerifyApiKeyReason::NotFound,
            Rejection::Revoked => VerifyApiKeyReason::Revoked,
            Rejection::Expired => VerifyApiKeyReason::Expired,
            Rejection::RateLimited { .. } => VerifyApiKeyReason::RateLimited,
            Rejection::UsageExceeded { .. } => VerifyApiKeyReason::UsageExceeded,
        }
    }
}

impl From<Verification> for proto::VerifyApiKeyResponse {
    fn from(verification: Verification) -> Self {
        match verification {
            Verification::Valid {
                record,
                credits_remaining,
            } => proto::VerifyApiKeyResponse {
                valid: true,
                reason: VerifyApiKeyReason::Valid.into(),
                api_key_id: record.id.0,
                chatbot_id: record.chatbot_id.to_string(),
                owner_id: record.owner_id.to_string(),
                llm_endpoint_url: record.llm_endpoint_url.clone(),
                credits_remaining,
                reset_time: None,
            },
            Verification::Refused(_, reason) | Verification::Invalid(reason) => {
                let (credits_remaining, reset_time) = match reason {
                    Rejection::RateLimited { retry_at } => (None, Some(retry_at)),
                    Rejection::UsageExceeded {
                        remaining,
                        next_refill,
                    } => (Some(remaining), next_refill),
                    _ => (None, None),
                };
                proto::VerifyApiKeyResponse {
                    valid: false,
                    reason: VerifyApiKeyReason::from(reason).into(),
                    credits_remaining,
                    reset_time: reset_time.map(convert::timestamp),
                    ..Default::default()
                }
            }
        }
    }
}

/// Under the chatbot's lock, so that the active-key limit holds against
/// concurrent creations and rotations on any replica.
pub async fn create_api_key(
    state: &AppState,
    caller: &Caller,
    cmd: CreateApiKey,
) -> AppResult<NewKey> {
    let chatbot_id = cmd.chatbot_id;
    let mut conn = state.db.conn().await?;
    let owner = authorize_chatbot(&mut conn, caller, chatbot_id).await?;
    let secret = ApiKeySecret::generate();
    let max_active = state.policy.max_active_api_keys_per_chatbot;
    let now = Utc::now();
    let (secret_ref, display_name) = (&secret, cmd.display_name.as_str());
    let api_key = conn
        .transaction(|conn| {
            async move {
                if !Chatbot::lock(conn, chatbot_id).await? {
                    return Err(AppError::NotFound("chatbot"));
                }
                if ApiKey::count_active(conn, chatbot_id, now).await? >= max_active {
                    return Err(AppError::FailedPrecondition(format!(
                        "the chatbot already has {max_active} active API keys; revoke one first"
                    )));
                }
                let key = ApiKey::insert(
                    conn,
                    NewApiKey {
                        chatbot_id,
                        display_name,
                        key_prefix: secret_ref.display_prefix(),
                        key_hash: &secret_ref.digest().0,
                        expires_at: cmd.expires_at.map(Timestamp),
                    },
                )
                .await?;
                let limits = KeyLimitChanges::new_key(cmd.rate_limit, cmd.credits, now);
                KeyLimits::apply(conn, key.id, &limits).await?;
                let target = AuditTarget::api_key(key.id, owner);
                audit::record(
                    conn,
                    caller,
                    &AuditRecord::new(AuditAction::ApiKeyCreate, target),
                )
                .await?;
                Ok(KeyWithLimits::load(conn, key).await?)
            }
            .scope_boxed()
        })
        .await?;
    tracing::info!(api_key_id = %api_key.key.id, chatbot_id = %chatbot_id, "API key created");
    Ok(NewKey { api_key, secret })
}

pub async fn get_api_key(
    state: &AppState,
    caller: &Caller,
    id: ApiKeyId,
) -> AppResult<KeyWithLimits> {
    let mut conn = state.db.conn().await?;
    let key = authorized_key(&mut conn, caller, id).await?;
    Ok(KeyWithLimits::load(&mut conn, key).await?)
}

/// Under the key's lock, so concurrent updates apply one after the other;
/// spends in between are kept (only the fields named are written).
pub async fn update_api_key(
    state: &AppState,
    caller: &Caller,
    cmd: UpdateApiKey,
) -> AppResult<KeyWithLimits> {
    let id = cmd.id;
    let mut conn = state.db.conn().await?;
    let (_, owner) = authorized_key_and_owner(&mut conn, caller, id).await?;
    let record = AuditRecord::new(AuditAction::ApiKeyUpdate, AuditTarget::api_key(id, owner))
        .with_changes(cmd.changed_fields());
    let key = state
        .caches
        .commit_and_invalidate(&mut conn, Invalidation::Key(id), |conn| {
            async move {
                if !ApiKey::lock(conn, id).await? {
                    return Err(AppError::NotFound("API key"));
                }
                let now = Utc::now();
                if cmd.expires_at.is_some() {
                    let key = ApiKey::find(conn, id)
                        .await?
                        .ok_or(AppError::NotFound("API key"))?;
                    may_move_expiry(&key, now)?;
                }
                let name = cmd.display_name.as_ref().map(DisplayText::as_str);
                ApiKey::set_label_and_expiry(conn, id, name, cmd.expires_at).await?;
                let mut limits = KeyLimitChanges::default();
                if let Some(rate_limit) = cmd.rate_limit {
                    limits.set_rate_limit(rate_limit);
                }
                match cmd.credits {
                    CreditsChange::Unchanged => {}
                    CreditsChange::Replace(credits) => limits.set_credits(credits, now),
                    CreditsChange::Balance(remaining) => limits.set_balance(remaining),
                    CreditsChange::Refill(refill) => {
                        let has_balance = KeyLimits::find(conn, id)
                            .await?
                            .and_then(|limits| limits.credits())
                            .is_some();
                        match refill {
                            // A refill needs a balance: an unlimited key
                            // starts at the refill's amount.
                            Some(refill) if !has_balance => limits.set_credits(
                                Some(CreditsSetting {
                                    remaining: refill.amount(),
                                    refill: Some(refill),
                                }),
                                now,
                            ),
                            Some(refill) => limits.set_refill(Some(refill), now),
                            None if has_balance => limits.set_refill(None, now),
                            None => {}
                        }
                    }
                }
                KeyLimits::apply(conn, id, &limits).await?;
                audit::record(conn, caller, &record).await?;
                key_with_limits(conn, id).await
            }
            .scope_boxed()
        })
        .await?;
    tracing::info!(api_key_id = %id, "API key updated");
    Ok(key)
}

pub async fn list_api_keys(
    state: &AppState,
    caller: &Caller,
    cmd: ListApiKeys,
) -> AppResult<Page<KeyWithLimits>> {
    let mut conn = state.db.conn().await?;
    authorize_chatbot(&mut conn, caller, cmd.filter.chatbot_id).await?;
    let keys = ApiKey::list(&mut conn, &cmd.filter, &cmd.page).await?;
    let page = cmd.page.page(keys, ApiKey::cursor);
    Ok(Page {
        items: KeyWithLimits::load_all(&mut conn, page.items).await?,
        next_page_token: page.next_page_token,
    })
}

pub async fn revoke_api_key(
    state: &AppState,
    caller: &Caller,
    id: ApiKeyId,
) -> AppResult<KeyWithLimits> {
    let mut conn = state.db.conn().await?;
    let (_, owner) = authorized_key_and_owner(&mut conn, caller, id).await?;
    let record = AuditRecord::new(AuditAction::ApiKeyRevoke, AuditTarget::api_key(id, owner));
    let key = state
        .caches
        .commit_and_invalidate(&mut conn, Invalidation::Key(id), |conn| {
            async move {
                // Revoking a revoked key changes nothing, and records nothing.
                if ApiKey::revoke(conn, id, Utc::now()).await? {
                    audit::record(conn, caller, &record).await?;
                }
                key_with_limits(conn, id).await
            }
            .scope_boxed()
        })
        .await?;
    tracing::info!(api_key_id = %id, "API key revoked");
    Ok(key)
}

/// Under the chatbot's lock, like CreateApiKey: concurrent rotations and
/// creations, on any replica, see each other's keys, so a key is replaced
/// once and the active-key limit holds.
pub async fn rotate_api_key(
    state: &AppState,
    caller: &Caller,
    cmd: RotateApiKey,
) -> AppResult<RotatedKey> {
    let RotateApiKey { id, grace_period } = cmd;
    let mut conn = state.db.conn().await?;
    let (old_key, owner) = authorized_key_and_owner(&mut conn, caller, id).await?;
    let chatbot_id = old_key.chatbot_id;
    let now = Utc::now();
    let grace_ends = now + chrono::Duration::from_std(grace_period).map_err(AppError::internal)?;
    let secret = ApiKeySecret::generate();
    let max_active = state.policy.max_active_api_keys_per_chatbot;
    let secret_ref = &secret;
    let (api_key, previous) = state
        .caches
        .commit_and_invalidate(&mut conn, Invalidation::Key(id), |conn| {
            async move {
                if !Chatbot::lock(conn, chatbot_id).await? {
                    return Err(AppError::NotFound("API key"));
                }
                let old = ApiKey::find(conn, id)
                    .await?
                    .ok_or(AppError::NotFound("API key"))?;
                if old.revoked {
                    return Err(AppError::FailedPrecondition(
                        "the key is revoked; create a new key instead".into(),
                    ));
                }
                if old.rotated_at.is_some() {
                    return Err(AppError::FailedPrecondition(
                        "the key was already replaced by a rotation; rotate its replacement instead".into(),
                    ));
                }
                if old.expires_at.is_some_and(|t| t <= now) {
                    return Err(AppError::FailedPrecondition(
                        "the key has expired; create a new key instead".into(),
                    ));
                }
                // A key in its grace period is a live secret: it counts.
                // Without a grace period the replacement takes the old
                // key's place, so the count does not change.
                if !grace_period.is_zero()
                    && ApiKey::count_active(conn, chatbot_id, now).await? >= max_active
                {
                    return Err(AppError::FailedPrecondition(format!(
                        "the chatbot already has {max_active} active API keys, and during a grace period both keys count; rotate without a grace period or revoke a key first"
                    )));
                }
                let new_key = ApiKey::insert(
                    conn,
                    NewApiKey {
                        chatbot_id,
                        display_name: &old.display_name,
                        key_prefix: secret_ref.display_prefix(),
                        key_hash: &secret_ref.digest().0,
                        expires_at: None,
                    },
                )
                .await?;
                let old_key = ApiKey::mark_rotated(conn, id, grace_ends, now)
                    .await?
                    .ok_or(AppError::NotFound("API key"))?;
                let old_key = KeyWithLimits::load(conn, old_key).await?;
                if let Some(limits) = &old_key.limits {
                    KeyLimits::apply(conn, new_key.id, &KeyLimitChanges::copy_of(limits, now))
                        .await?;
                }
                let record =
                    AuditRecord::new(AuditAction::ApiKeyRotate, AuditTarget::api_key(id, owner))
                        .with_changes(vec![AuditChange::values(
                            "replacement_id",
                            "",
                            new_key.id,
                        )]);
                audit::record(conn, caller, &record).await?;
                Ok((KeyWithLimits::load(conn, new_key).await?, old_key))
            }
            .scope_boxed()
        })
        .await?;
    tracing::info!(old_api_key_id = %id, new_api_key_id = %api_key.key.id, "API key rotated");
    Ok(RotatedKey {
        api_key,
        secret,
        previous,
    })
}

pub async fn delete_api_key(state: &AppState, caller: &Caller, id: ApiKeyId) -> AppResult<()> {
    let mut conn = state.db.conn().await?;
    let (_, owner) = authorized_key_and_owner(&mut conn, caller, id).await?;
    let stale = Invalidation::Key(id);
    let record = AuditRecord::new(AuditAction::ApiKeyDelete, AuditTarget::api_key(id, owner));
    delete_row(
        state,
        &mut conn,
        stale,
        "API key",
        (caller, record),
        move |conn| ApiKey::delete(conn, id).scope_boxed(),
    )
    .await?;
    tracing::info!(api_key_id = %id, "API key deleted");
    Ok(())
}

/// The hot path: a malformed key costs nothing, a cached one no query, and
/// nothing is written for a key without credits (last use and usage are
/// counted for the next batch); a key with credits spends through one
/// batched write ([`crate::hot_path::credit_spends`]). Errors only when the
/// key's rate limit is spent or the store is unreachable.
pub async fn verify_api_key(state: &AppState, cmd: VerifyApiKey) -> AppResult<Verification> {
    let Some(secret) = cmd.secret else {
        return Ok(Verification::Invalid(Rejection::Malformed));
    };
    let digest = secret.digest();
    if let Err(retry_after) = state.rate_limits.check(RateKey::api_key(&digest)).await {
        return Err(AppError::ResourceExhausted {
            message: "rate limit for this API key exceeded; retry later".into(),
            retry_after,
        });
    }
    let record = match state.api_key_cache.get(&digest) {
        Lookup::Hit(record) => record,
        Lookup::Miss(generation) => {
            let mut conn = state.db.conn().await?;
            let record = ApiKey::find_for_verification(&mut conn, &digest)
                .await?
                .map(Arc::new);
            drop(conn);
            state
                .api_key_cache
                .insert(&digest, record.clone(), generation);
            record
        }
    };
    let Some(record) = record else {
        return Ok(Verification::Invalid(Rejection::NotFound));
    };
    let now = Utc::now();
    let verification = judge(state, record, cmd.cost, now).await?;
    if let Some((record, event)) = verification.usage(cmd.cost) {
        state.usage.record(record.id, record.chatbot_id, now, event);
    }
    Ok(verification)
}

/// Whether a known key is valid at `now`: not revoked, not expired, within
/// its own rate limit, and (for a key with credits) covering `cost`, which
/// it then spends.
async fn judge(
    state: &AppState,
    record: Arc<VerificationRecord>,
    cost: i64,
    now: DateTime<Utc>,
) -> AppResult<Verification> {
    if record.revoked {
        return Ok(Verification::Refused(record, Rejection::Revoked));
    }
    if record.expires_at.is_some_and(|t| t <= now) {
        return Ok(Verification::Refused(record, Rejection::Expired));
    }
    if let Some(limit) = record.rate_limit() {
        if let Err(retry_after) = state.rate_limits.check_own_limit(record.id, limit).await {
            let retry_at = now + TimeDelta::from_std(retry_after).unwrap_or(TimeDelta::MAX);
            return Ok(Verification::Refused(
                record,
                Rejection::RateLimited { retry_at },
            ));
        }
    }
    let credits_remaining = if record.has_credits() {
        match state.credit_spends.spend(record.id, cost).await? {
            SpendOutcome::Spent(remaining) => Some(remaining),
            SpendOutcome::Unlimited => None,
            SpendOutcome::KeyGone => return Ok(Verification::Invalid(Rejection::NotFound)),
            SpendOutcome::Short {
                remaining,
                next_refill,
            } => {
                return Ok(Verification::Refused(
                    record,
                    Rejection::UsageExceeded {
                        remaining,
                        next_refill,
                    },
                ))
            }
        }
    } else {
        None
    };
    state.last_used.record(record.id, now);
    Ok(Verification::Valid {
        record,
        credits_remaining,
    })
}

/// Whether UpdateApiKey may move a key's expiry: not once the key has
/// ended, since that would bring back a key that no longer counts against
/// the chatbot's active-key limit, and not for a key a rotation replaced,
/// whose grace period the rotation set.
fn may_move_expiry(key: &ApiKey, now: DateTime<Utc>) -> AppResult<()> {
    if key.rotated_at.is_some() {
        return Err(AppError::FailedPrecondition(
            "the key was replaced by a rotation, which set when it ends".into(),
        ));
    }
    if key.expires_at.is_some_and(|t| t <= now) {
        return Err(AppError::FailedPrecondition(
            "the key has expired; create a new key instead".into(),
        ));
    }
    Ok(())
}

/// The key with its limits; NOT_FOUND if it is gone.
async fn key_with_limits(conn: &mut DbConnection, id: ApiKeyId) -> AppResult<KeyWithLimits> {
    let key = ApiKey::find(conn, id)
        .await?
        .ok_or(AppError::NotFound("API key"))?;
    Ok(KeyWithLimits::load(conn, key).await?)
}

/// The chatbot's owner, if the caller may act on it ([`Caller::authorize`]).
pub(super) async fn authorize_chatbot(
    conn: &mut DbConnection,
    caller: &Caller,
    id: ChatbotId,
) -> AppResult<UserId> {
    let owner = Chatbot::find_owner(conn, id).await?;
    caller.authorize(owner.map(|owner| (owner, owner)), "chatbot")
}

/// The key, if the caller may act on its chatbot ([`Caller::authorize`]).
pub(super) async fn authorized_key(
    conn: &mut DbConnection,
    caller: &Caller,
    id: ApiKeyId,
) -> AppResult<ApiKey> {
    caller.authorize(ApiKey::find_with_owner(conn, id).await?, "API key")
}

/// The key and its chatbot's owner, if the caller may act on it.
async fn authorized_key_and_owner(
    conn: &mut DbConnection,
    caller: &Caller,
    id: ApiKeyId,
) -> AppResult<(ApiKey, UserId)> {
    let found = ApiKey::find_with_owner(conn, id).await?;
    caller.authorize(found.map(|(key, owner)| ((key, owner), owner)), "API key")
}
