//! ApiKeyService. Management RPCs are for the chatbot's owner or an admin;
//! VerifyApiKey is public (the key is the credential) and is the hot path:
//! malformed keys never reach the database, valid ones cost one indexed
//! read, and last-used times are written in batches, never per call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::result::Error as DieselError;
use diesel_async::scoped_futures::ScopedFutureExt;
use tonic::{Request, Response, Status};

use super::api_key_cache::{Invalidation, Lookup};
use super::{convert, AppState};
use crate::auth::{caller, Caller};
use crate::db::models::{ApiKey, ApiKeyListFilter, Chatbot, NewApiKey};
use crate::db::sql_types::Timestamp;
use crate::db::{Database, DbConnection};
use crate::domain::{ApiKeyId, ApiKeySecret, ChatbotId, PageRequest};
use crate::error::{AppError, AppResult, FieldViolation, Violations};
use crate::proto::api_key_service_server::ApiKeyService;
use crate::proto::{self, VerifyApiKeyReason};
use crate::rate_limit::RateKey;

/// Longest grace period RotateApiKey grants.
const MAX_GRACE_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);
const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// The ApiKeyService implementation.
pub struct ApiKeys {
    state: Arc<AppState>,
}

impl ApiKeys {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

/// Collects successful verifications and writes them as one batch per
/// interval, so verification never writes per call.
#[derive(Clone, Default)]
pub struct LastUsedRecorder {
    pending: Arc<Mutex<HashMap<ApiKeyId, DateTime<Utc>>>>,
}

impl LastUsedRecorder {
    pub fn record(&self, id: ApiKeyId, at: DateTime<Utc>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.insert(id, at);
    }

    /// Writes everything recorded so far; on failure the batch is put back
    /// (keeping newer times) for the next attempt.
    pub async fn flush(&self, db: &Database) -> anyhow::Result<usize> {
        let batch: Vec<(ApiKeyId, DateTime<Utc>)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let result = async {
            let mut conn = db.conn().await?;
            let batch = &batch;
            // One transaction: one commit for the whole batch.
            let updated = conn
                .transaction(|conn| {
                    async move { ApiKey::record_last_used(conn, batch).await }.scope_boxed()
                })
                .await?;
            anyhow::Ok(updated)
        }
        .await;
        if result.is_err() {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (id, at) in batch {
                pending
                    .entry(id)
                    .and_modify(|t| *t = (*t).max(at))
                    .or_insert(at);
            }
        }
        result
    }
}

/// The chatbot exists and the caller owns it, or is an admin. Non-admins
/// cannot tell a missing chatbot from someone else's (AIP-193).
async fn authorize_chatbot(
    conn: &mut DbConnection,
    caller: &Caller,
    id: ChatbotId,
) -> AppResult<()> {
    match Chatbot::find_owner(conn, id).await? {
        Some(owner) if caller.may_act_for(owner) => Ok(()),
        Some(_) => Err(AppError::PermissionDenied),
        None if caller.is_admin() => Err(AppError::NotFound("chatbot")),
        None => Err(AppError::PermissionDenied),
    }
}

/// The key exists and the caller owns its chatbot, or is an admin.
async fn authorized_key(
    conn: &mut DbConnection,
    caller: &Caller,
    id: ApiKeyId,
) -> AppResult<ApiKey> {
    match ApiKey::find_with_owner(conn, id).await? {
        Some((key, owner)) if caller.may_act_for(owner) => Ok(key),
        Some(_) => Err(AppError::PermissionDenied),
        None if caller.is_admin() => Err(AppError::NotFound("API key")),
        None => Err(AppError::PermissionDenied),
    }
}

fn parse_display_name(value: &str) -> Result<String, FieldViolation> {
    crate::domain::DisplayText::parse("display_name", value, MAX_DISPLAY_NAME_CHARS)
        .map(String::from)
}

fn parse_grace_period(value: Option<&prost_types::Duration>) -> Result<Duration, FieldViolation> {
    let Some(value) = value else {
        return Ok(Duration::ZERO);
    };
    let grace = convert::parse_duration("grace_period", value)?;
    if grace > MAX_GRACE_PERIOD {
        return Err(FieldViolation::new(
            "grace_period",
            "must be at most 30 days",
        ));
    }
    Ok(grace)
}

#[tonic::async_trait]
impl ApiKeyService for ApiKeys {
    async fn create_api_key(
        &self,
        request: Request<proto::CreateApiKeyRequest>,
    ) -> Result<Response<proto::CreateApiKeyResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let now = Utc::now();
        let mut violations = Violations::new();
        let chatbot_id = violations.check(ChatbotId::parse("chatbot_id", &request.chatbot_id));
        let display_name = violations.check(parse_display_name(&request.display_name));
        let expires_at = match &request.expire_time {
            None => Some(None),
            Some(time) => match convert::parse_timestamp("expire_time", time) {
                Ok(time) if time <= now => {
                    violations.push(FieldViolation::new("expire_time", "must be in the future"));
                    None
                }
                Ok(time) => Some(Some(time)),
                Err(violation) => {
                    violations.push(violation);
                    None
                }
            },
        };
        violations.finish()?;
        let (Some(chatbot_id), Some(display_name), Some(expires_at)) =
            (chatbot_id, display_name, expires_at)
        else {
            unreachable!("finish() returned Ok, so every field parsed");
        };

        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        authorize_chatbot(&mut conn, &caller, chatbot_id).await?;
        let secret = ApiKeySecret::generate();
        let max_active = self.state.policy.max_active_api_keys_per_chatbot;
        let created = conn
            .transaction(|conn| {
                let secret = &secret;
                let display_name = &display_name;
                async move {
                    if !Chatbot::lock(conn, chatbot_id).await? {
                        return Ok(Err(AppError::NotFound("chatbot")));
                    }
                    if ApiKey::count_active(conn, chatbot_id, now).await? >= max_active {
                        return Ok(Err(AppError::FailedPrecondition(format!(
                            "the chatbot already has {max_active} active API keys; revoke one first"
                        ))));
                    }
                    let key = ApiKey::insert(
                        conn,
                        NewApiKey {
                            chatbot_id,
                            display_name,
                            key_prefix: secret.display_prefix(),
                            key_hash: &secret.digest().0,
                            expires_at: expires_at.map(Timestamp),
                        },
                    )
                    .await?;
                    Ok::<_, DieselError>(Ok(key))
                }
                .scope_boxed()
            })
            .await
            .map_err(AppError::from)??;
        tracing::info!(api_key_id = %created.id, chatbot_id = %chatbot_id, "API key created");
        Ok(Response::new(proto::CreateApiKeyResponse {
            api_key: Some(convert::api_key(created)),
            key: secret.expose().to_owned(),
        }))
    }

    async fn get_api_key(
        &self,
        request: Request<proto::GetApiKeyRequest>,
    ) -> Result<Response<proto::GetApiKeyResponse>, Status> {
        let caller = caller(&request)?;
        let id = ApiKeyId::parse("id", request.get_ref().id).map_err(AppError::from)?;
        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let key = authorized_key(&mut conn, &caller, id).await?;
        Ok(Response::new(proto::GetApiKeyResponse {
            api_key: Some(convert::api_key(key)),
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<proto::ListApiKeysRequest>,
    ) -> Result<Response<proto::ListApiKeysResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::new();
        let chatbot_id = violations.check(ChatbotId::parse("chatbot_id", &request.chatbot_id));
        let expire_before = request
            .expire_before
            .as_ref()
            .map(|time| violations.check(convert::parse_timestamp("expire_before", time)));
        let filter = format!(
            "api_keys|chatbot={}|revoked={}|before={}",
            request.chatbot_id,
            request.show_revoked,
            expire_before.flatten().map_or(-1, |t| t.timestamp_micros()),
        );
        let page = violations.check(PageRequest::parse(
            request.page_size,
            &request.page_token,
            &filter,
        ));
        violations.finish()?;
        let (Some(chatbot_id), Some(page)) = (chatbot_id, page) else {
            unreachable!("finish() returned Ok, so every field parsed");
        };
        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        authorize_chatbot(&mut conn, &caller, chatbot_id).await?;
        let list_filter = ApiKeyListFilter {
            chatbot_id,
            show_revoked: request.show_revoked,
            expire_before: expire_before.flatten(),
        };
        let mut keys = ApiKey::list(&mut conn, &list_filter, &page)
            .await
            .map_err(AppError::from)?;
        let next_page_token = page.finish(&mut keys, ApiKey::cursor);
        Ok(Response::new(proto::ListApiKeysResponse {
            api_keys: keys.into_iter().map(convert::api_key).collect(),
            next_page_token,
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<proto::RevokeApiKeyRequest>,
    ) -> Result<Response<proto::RevokeApiKeyResponse>, Status> {
        let caller = caller(&request)?;
        let id = ApiKeyId::parse("id", request.get_ref().id).map_err(AppError::from)?;
        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        authorized_key(&mut conn, &caller, id).await?;
        let key = self
            .state
            .commit_and_invalidate(&mut conn, Invalidation::Key(id), |conn| {
                async move {
                    ApiKey::revoke(conn, id, Utc::now())
                        .await?
                        .ok_or(AppError::NotFound("API key"))
                }
                .scope_boxed()
            })
            .await?;
        tracing::info!(api_key_id = %id, "API key revoked");
        Ok(Response::new(proto::RevokeApiKeyResponse {
            api_key: Some(convert::api_key(key)),
        }))
    }

    async fn rotate_api_key(
        &self,
        request: Request<proto::RotateApiKeyRequest>,
    ) -> Result<Response<proto::RotateApiKeyResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::new();
        let id = violations.check(ApiKeyId::parse("id", request.id));
        let grace = violations.check(parse_grace_period(request.grace_period.as_ref()));
        violations.finish()?;
        let (Some(id), Some(grace)) = (id, grace) else {
            unreachable!("finish() returned Ok, so every field parsed");
        };

        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let chatbot_id = authorized_key(&mut conn, &caller, id).await?.chatbot_id;
        let now = Utc::now();
        let grace_ends = now
            + chrono::Duration::from_std(grace)
                .map_err(|e| AppError::internal(anyhow::anyhow!(e)))?;
        let secret = ApiKeySecret::generate();
        let max_active = self.state.policy.max_active_api_keys_per_chatbot;
        // Under the chatbot's lock, like CreateApiKey: concurrent rotations
        // and creations, on any replica, see each other's keys, so a key is
        // replaced once and the active-key limit holds.
        let (new_key, old_key) = self
            .state
            .commit_and_invalidate(&mut conn, Invalidation::Key(id), |conn| {
                let secret = &secret;
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
                    if !grace.is_zero()
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
                            key_prefix: secret.display_prefix(),
                            key_hash: &secret.digest().0,
                            expires_at: None,
                        },
                    )
                    .await?;
                    let old_key = ApiKey::mark_rotated(conn, id, grace_ends, now)
                        .await?
                        .ok_or(AppError::NotFound("API key"))?;
                    Ok((new_key, old_key))
                }
                .scope_boxed()
            })
            .await?;
        tracing::info!(old_api_key_id = %id, new_api_key_id = %new_key.id, "API key rotated");
        Ok(Response::new(proto::RotateApiKeyResponse {
            api_key: Some(convert::api_key(new_key)),
            key: secret.expose().to_owned(),
            previous_api_key: Some(convert::api_key(old_key)),
        }))
    }

    async fn delete_api_key(
        &self,
        request: Request<proto::DeleteApiKeyRequest>,
    ) -> Result<Response<proto::DeleteApiKeyResponse>, Status> {
        let caller = caller(&request)?;
        let id = ApiKeyId::parse("id", request.get_ref().id).map_err(AppError::from)?;
        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        authorized_key(&mut conn, &caller, id).await?;
        self.state
            .commit_and_invalidate(&mut conn, Invalidation::Key(id), |conn| {
                async move {
                    match ApiKey::delete(conn, id).await? {
                        true => Ok(()),
                        false => Err(AppError::NotFound("API key")),
                    }
                }
                .scope_boxed()
            })
            .await?;
        tracing::info!(api_key_id = %id, "API key deleted");
        Ok(Response::new(proto::DeleteApiKeyResponse {}))
    }

    async fn verify_api_key(
        &self,
        request: Request<proto::VerifyApiKeyRequest>,
    ) -> Result<Response<proto::VerifyApiKeyResponse>, Status> {
        let invalid = |reason: VerifyApiKeyReason| {
            Ok(Response::new(proto::VerifyApiKeyResponse {
                valid: false,
                reason: reason.into(),
                ..Default::default()
            }))
        };
        let Some(secret) = ApiKeySecret::parse(&request.get_ref().key) else {
            return invalid(VerifyApiKeyReason::Malformed);
        };
        let digest = secret.digest();
        if let Err(retry_after) = self.state.rate_limits.check(RateKey::api_key(&digest)) {
            return Err(AppError::ResourceExhausted {
                message: "rate limit for this API key exceeded; retry later".into(),
                retry_after,
            }
            .into());
        }
        let record = match self.state.api_key_cache.get(&digest) {
            Lookup::Hit(record) => record,
            Lookup::Miss(generation) => {
                let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
                let record = ApiKey::find_for_verification(&mut conn, &digest)
                    .await
                    .map_err(AppError::from)?
                    .map(Arc::new);
                drop(conn);
                self.state
                    .api_key_cache
                    .insert(&digest, record.clone(), generation);
                record
            }
        };
        let Some(record) = record else {
            return invalid(VerifyApiKeyReason::NotFound);
        };
        let now = Utc::now();
        if record.revoked {
            return invalid(VerifyApiKeyReason::Revoked);
        }
        if record.expires_at.is_some_and(|t| t <= now) {
            return invalid(VerifyApiKeyReason::Expired);
        }
        self.state.last_used.record(record.id, now);
        Ok(Response::new(proto::VerifyApiKeyResponse {
            valid: true,
            reason: VerifyApiKeyReason::Valid.into(),
            api_key_id: record.id.0,
            chatbot_id: record.chatbot_id.to_string(),
            owner_id: record.owner_id.to_string(),
            llm_endpoint_url: record.llm_endpoint_url.clone(),
        }))
    }
}
