//! ApiKeyService's management operations. Each write goes through
//! [`AppState::write`]; the rules it keeps are pure functions in
//! [`crate::domain`] ([`KeyLifecycle`], [`CreditsChange::edit`]).

use chrono::Utc;
use diesel_async::scoped_futures::ScopedFutureExt;

use super::super::events::state_of;
use super::super::{audit, delete_row, retries, AppState};
use crate::auth::ownership::{self, Placement};
use crate::auth::Caller;
use crate::db::models::{
    ApiKey, Chatbot, CreateRequest, KeyLimitChanges, KeyLimits, KeyWithLimits, NewApiKey,
    Reservation, StoredGrants,
};
use crate::db::sql_types::Timestamp;
use crate::db::{DbConnection, Invalidation, Written};
use crate::domain::{
    may_add_active_key, may_rotate_with_grace, permissions_json, AllowedNetworks, ApiKeyId,
    ApiKeySecret, AuditAction, AuditChange, AuditRecord, AuditTarget, CreateApiKey, DisplayText,
    KeyLifecycle, ListApiKeys, Metadata, OrgAction, Page, RotateApiKey, UpdateApiKey,
};
use crate::error::{AppError, AppResult};

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

/// Under the chatbot's lock, so that the active-key limit holds against
/// concurrent creations and rotations on any replica.
pub async fn create_api_key(
    state: &AppState,
    caller: &Caller,
    cmd: CreateApiKey,
) -> AppResult<NewKey> {
    let chatbot_id = cmd.chatbot_id;
    let mut conn = state.db.conn().await?;
    let placement = ownership::chatbot_placement(
        &mut conn,
        &state.memberships,
        caller,
        chatbot_id,
        OrgAction::Edit,
    )
    .await?;
    let max_active = state.policy.max_active_api_keys_per_chatbot;
    let now = Utc::now();
    let retry = cmd
        .request
        .as_ref()
        .map(|request| retries::request_key(caller, "CreateApiKey", request));
    let source = retries::SecretSource::new(state.webhook_signer.as_ref(), retry.as_ref(), KEYS);
    let secret = ApiKeySecret::generate_with(&mut source.first(), now.timestamp());
    let (secret_ref, display_name, grants) = (&secret, cmd.display_name.as_str(), &cmd.grants);
    let (retry, salt) = (retry.as_ref(), source.salt());
    // A new key: no cache holds it.
    let (api_key, first) = state
        .write(&mut conn, audit::actor(caller), None, |conn| {
            async move {
                if !Chatbot::lock(conn, chatbot_id).await? {
                    return Err(AppError::NotFound("chatbot"));
                }
                if let Some(key) = retry {
                    if let Some(first) = retries::claim(conn, key, salt, now).await? {
                        let id = first.resource_id.parse().map(ApiKeyId);
                        let key = match id {
                            Ok(id) => ApiKey::find(conn, id).await?,
                            Err(_) => None,
                        };
                        let key = key.ok_or_else(|| retries::deleted_since("API key"))?;
                        let key = KeyWithLimits::load(conn, key).await?;
                        return Ok(Written::unrecorded((key, Some(first))));
                    }
                }
                may_add_active_key(
                    ApiKey::count_active(conn, chatbot_id, now).await?,
                    max_active,
                )?;
                let key = ApiKey::insert(
                    conn,
                    NewApiKey::new(
                        chatbot_id,
                        display_name,
                        secret_ref,
                        cmd.expires_at.map(Timestamp),
                    )
                    .with_grants(grants),
                )
                .await?;
                let limits = KeyLimitChanges::new_key(cmd.rate_limit, cmd.credits, now);
                KeyLimits::apply(conn, key.id, &limits).await?;
                if let Some(retry) = retry {
                    CreateRequest::created(conn, retry, &key.id.to_string()).await?;
                }
                let target = AuditTarget::api_key(key.id, placement.owner, placement.organization);
                let key = KeyWithLimits::load(conn, key).await?;
                let record = AuditRecord::new(AuditAction::ApiKeyCreate, target)
                    .with_state(state_of(key.clone()));
                Ok(Written::recorded((key, None), record))
            }
            .scope_boxed()
        })
        .await?;
    let Some(first) = first else {
        tracing::info!(api_key_id = %api_key.key.id, chatbot_id = %chatbot_id, "API key created");
        return Ok(NewKey { api_key, secret });
    };
    // A retry: the first request's secret, drawn again, if it can be.
    let mut stream = source.again(&first, "key", ROTATE_INSTEAD)?;
    let again = ApiKeySecret::generate_with(&mut stream, first.created_at.timestamp());
    if !ApiKey::digest_is(&mut conn, api_key.key.id, &again.digest()).await? {
        return Err(retries::secret_changed("key", ROTATE_INSTEAD));
    }
    Ok(NewKey {
        api_key,
        secret: again,
    })
}

/// Names the stream a retried create's or rotation's secret is drawn from.
const KEYS: &[u8; 32] = b"chatbot-backend api key retry v1";
/// What to do when a retry cannot show its key's secret again.
const ROTATE_INSTEAD: &str = "rotate the key";

pub async fn get_api_key(
    state: &AppState,
    caller: &Caller,
    id: ApiKeyId,
) -> AppResult<KeyWithLimits> {
    let mut conn = state.db.conn().await?;
    let (key, _) =
        ownership::api_key(&mut conn, &state.memberships, caller, id, OrgAction::View).await?;
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
    let (_, placement) =
        ownership::api_key(&mut conn, &state.memberships, caller, id, OrgAction::Edit).await?;
    let record = AuditRecord::new(AuditAction::ApiKeyUpdate, key_target(id, placement))
        .with_changes(cmd.changed_fields());
    // Every replica's VerifyApiKey cache drops the key.
    let stale = Some(Invalidation::Key(id));
    let key = state
        .write(&mut conn, audit::actor(caller), stale, |conn| {
            async move {
                if !ApiKey::lock(conn, id).await? {
                    return Err(AppError::NotFound("API key"));
                }
                if let Some(etag) = &cmd.etag {
                    // Under the balance's lock too: no spend between the
                    // check and the write.
                    KeyLimits::lock_many(conn, &[id]).await?;
                    let key = crate::proto::ApiKey::from(key_with_limits(conn, id).await?);
                    if key.etag != *etag {
                        return Err(AppError::Aborted(
                            "the key changed since its etag was read: read it again".into(),
                        ));
                    }
                }
                let now = Utc::now();
                if cmd.expires_at.is_some() {
                    lifecycle(&find_key(conn, id).await?).may_move_expiry(now)?;
                }
                let name = cmd.display_name.as_ref().map(DisplayText::as_str);
                ApiKey::set_label_and_expiry(conn, id, name, cmd.expires_at).await?;
                let grants = StoredGrants {
                    allowed_networks: cmd.networks.as_ref().map(AllowedNetworks::to_json),
                    permissions: cmd.permissions.as_deref().map(permissions_json),
                    metadata: cmd.metadata.as_ref().map(Metadata::to_json),
                    external_id: cmd.external_id.as_ref().map(Option::as_deref),
                };
                ApiKey::set_grants(conn, id, &grants).await?;
                // Locked: an addition is computed from the balance as it
                // is, and no spend may write it in between.
                let credits = match cmd.limits.credits.depends_on_balance() {
                    true => KeyLimits::lock_many(conn, &[id])
                        .await?
                        .pop()
                        .and_then(|limits| limits.credits()),
                    false => None,
                };
                if cmd.limits.credits.needs_balance() && credits.is_none() {
                    return Err(AppError::FailedPrecondition(
                        "the key's credits are unlimited: set credits before adding to them or \
                         giving them a low threshold"
                            .into(),
                    ));
                }
                let limits = KeyLimitChanges::of_update(cmd.limits, credits, now)?;
                KeyLimits::apply(conn, id, &limits).await?;
                let key = key_with_limits(conn, id).await?;
                let record = record.with_state(state_of(key.clone()));
                Ok(Written::recorded(key, record))
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
    let chatbot_id = cmd.filter.chatbot_id;
    let (memberships, view) = (&state.memberships, OrgAction::View);
    ownership::chatbot_placement(&mut conn, memberships, caller, chatbot_id, view).await?;
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
    let (_, placement) =
        ownership::api_key(&mut conn, &state.memberships, caller, id, OrgAction::Edit).await?;
    let record = AuditRecord::new(AuditAction::ApiKeyRevoke, key_target(id, placement));
    // Every replica's VerifyApiKey cache drops the key.
    let stale = Some(Invalidation::Key(id));
    let key = state
        .write(&mut conn, audit::actor(caller), stale, |conn| {
            async move {
                let revoked = ApiKey::revoke(conn, id, Utc::now()).await?;
                let key = key_with_limits(conn, id).await?;
                // Revoking a revoked key changes nothing, and records nothing.
                Ok(match revoked {
                    true => {
                        let record = record.with_state(state_of(key.clone()));
                        Written::recorded(key, record)
                    }
                    false => Written::unrecorded(key),
                })
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
    let RotateApiKey {
        id,
        grace_period,
        request,
    } = cmd;
    let mut conn = state.db.conn().await?;
    let (old_key, placement) =
        ownership::api_key(&mut conn, &state.memberships, caller, id, OrgAction::Edit).await?;
    let chatbot_id = old_key.chatbot_id;
    let now = Utc::now();
    let grace_ends = now + chrono::Duration::from_std(grace_period).map_err(AppError::internal)?;
    let retry = request
        .as_ref()
        .map(|request| retries::request_key(caller, "RotateApiKey", request));
    let source = retries::SecretSource::new(state.webhook_signer.as_ref(), retry.as_ref(), KEYS);
    let secret = ApiKeySecret::generate_with(&mut source.first(), now.timestamp());
    let max_active = state.policy.max_active_api_keys_per_chatbot;
    let (secret_ref, retry, salt) = (&secret, retry.as_ref(), source.salt());
    // Every replica's VerifyApiKey cache drops the key.
    let stale = Some(Invalidation::Key(id));
    let (api_key, previous, first) = state
        .write(&mut conn, audit::actor(caller), stale, |conn| {
            async move {
                if !Chatbot::lock(conn, chatbot_id).await? {
                    return Err(AppError::NotFound("API key"));
                }
                if let Some(key) = retry {
                    if let Some(first) = retries::claim(conn, key, salt, now).await? {
                        let replacement = match first.resource_id.parse().map(ApiKeyId) {
                            Ok(replacement) => ApiKey::find(conn, replacement).await?,
                            Err(_) => None,
                        };
                        let replacement =
                            replacement.ok_or_else(|| retries::deleted_since("replacement key"))?;
                        let replacement = KeyWithLimits::load(conn, replacement).await?;
                        let old = key_with_limits(conn, id).await?;
                        return Ok(Written::unrecorded((replacement, old, Some(first))));
                    }
                }
                let old = find_key(conn, id).await?;
                lifecycle(&old).may_rotate(now)?;
                let active = match grace_period.is_zero() {
                    true => 0,
                    false => ApiKey::count_active(conn, chatbot_id, now).await?,
                };
                may_rotate_with_grace(!grace_period.is_zero(), active, max_active)?;
                // The replacement carries everything the old key did.
                let old_grants = old.grants();
                let new_key = ApiKey::insert(
                    conn,
                    NewApiKey::new(chatbot_id, &old.display_name, secret_ref, None)
                        .with_grants(&old_grants),
                )
                .await?;
                if let Some(retry) = retry {
                    CreateRequest::created(conn, retry, &new_key.id.to_string()).await?;
                }
                let old_key = ApiKey::mark_rotated(conn, id, new_key.id, grace_ends, now)
                    .await?
                    .ok_or(AppError::NotFound("API key"))?;
                let old_key = KeyWithLimits::load(conn, old_key).await?;
                if let Some(limits) = &old_key.limits {
                    KeyLimits::apply(conn, new_key.id, &KeyLimitChanges::copy_of(limits, now))
                        .await?;
                    // The old key spends from the replacement's balance
                    // while its grace period lasts (one budget, not two);
                    // its own is emptied, so it has nothing of its own to
                    // spend should the replacement be deleted.
                    if limits.credits().is_some() {
                        let mut emptied = KeyLimitChanges::default();
                        emptied.set_balance(0);
                        emptied.set_refill(None, now);
                        KeyLimits::apply(conn, id, &emptied).await?;
                    }
                }
                // Open reservations are settled against the balance that
                // now carries on: the replacement's.
                Reservation::move_open(conn, id, new_key.id).await?;
                let record = AuditRecord::new(AuditAction::ApiKeyRotate, key_target(id, placement))
                    .with_changes(vec![AuditChange::values("replacement_id", "", new_key.id)])
                    .with_state(state_of(key_with_limits(conn, id).await?));
                let new_key = KeyWithLimits::load(conn, new_key).await?;
                Ok(Written::recorded((new_key, old_key, None), record))
            }
            .scope_boxed()
        })
        .await?;
    let Some(first) = first else {
        tracing::info!(old_api_key_id = %id, new_api_key_id = %api_key.key.id, "API key rotated");
        return Ok(RotatedKey {
            api_key,
            secret,
            previous,
        });
    };
    // A retry: the first rotation's secret, drawn again, if it can be.
    let mut stream = source.again(&first, "replacement key", ROTATE_INSTEAD)?;
    let again = ApiKeySecret::generate_with(&mut stream, first.created_at.timestamp());
    if !ApiKey::digest_is(&mut conn, api_key.key.id, &again.digest()).await? {
        return Err(retries::secret_changed("replacement key", ROTATE_INSTEAD));
    }
    Ok(RotatedKey {
        api_key,
        secret: again,
        previous,
    })
}

pub async fn delete_api_key(state: &AppState, caller: &Caller, id: ApiKeyId) -> AppResult<()> {
    let mut conn = state.db.conn().await?;
    let (_, placement) =
        ownership::api_key(&mut conn, &state.memberships, caller, id, OrgAction::Edit).await?;
    let record = AuditRecord::new(AuditAction::ApiKeyDelete, key_target(id, placement));
    delete_row(
        state,
        &mut conn,
        Some(Invalidation::Key(id)),
        "API key",
        (audit::actor(caller), record),
        move |conn| ApiKey::delete(conn, id).scope_boxed(),
    )
    .await?;
    tracing::info!(api_key_id = %id, "API key deleted");
    Ok(())
}

/// What the audit log records a key's events against.
fn key_target(id: ApiKeyId, placement: Placement) -> AuditTarget {
    AuditTarget::api_key(id, placement.owner, placement.organization)
}

/// The key's row, read again under the transaction's lock; NOT_FOUND if it
/// is gone.
async fn find_key(conn: &mut DbConnection, id: ApiKeyId) -> AppResult<ApiKey> {
    ApiKey::find(conn, id)
        .await?
        .ok_or(AppError::NotFound("API key"))
}

/// Where the key stands, for the rules of [`KeyLifecycle`].
fn lifecycle(key: &ApiKey) -> KeyLifecycle {
    KeyLifecycle {
        revoked: key.revoked,
        rotated: key.rotated_at.is_some(),
        expires_at: key.expires_at,
    }
}

/// The key with its limits; NOT_FOUND if it is gone.
async fn key_with_limits(conn: &mut DbConnection, id: ApiKeyId) -> AppResult<KeyWithLimits> {
    let key = find_key(conn, id).await?;
    Ok(KeyWithLimits::load(conn, key).await?)
}
