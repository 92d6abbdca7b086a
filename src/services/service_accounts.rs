//! OrganizationService's service-account operations: credentials for other
//! services, created, listed, revoked and deleted by an organization's
//! owners. A token is shown once and stored as its digest; revoking or
//! deleting commits with an [`Invalidation::ServiceAccount`], so the token
//! stops working at its next call on every replica. How a token
//! authenticates a call is [`crate::auth::ServiceAccounts`].

use chrono::Utc;
use diesel_async::scoped_futures::ScopedFutureExt;

use super::convert::{self, list_of, parse_role, role_message, timestamp};
use super::events::state_of;
use super::retries::{self, SecretSource};
use super::{audit, delete_row, AppState};
use crate::auth::{ownership, Caller};
use crate::db::models::{CreateRequest, NewServiceAccount, ServiceAccount};
use crate::db::sql_types::Timestamp;
use crate::db::{is_foreign_key_violation, Invalidation, Written};
use crate::domain::{
    AuditAction, AuditChange, AuditRecord, AuditTarget, CreateRequestId, ListOf, OrgRole,
    OrganizationId, OrganizationName, Page, ServiceAccountId, ServiceAccountToken,
};
use crate::error::{parsed, AppError, AppResult, FieldViolation};
use crate::proto;

/// CreateServiceAccount.
#[derive(Debug)]
pub struct CreateServiceAccount {
    pub organization: OrganizationId,
    pub name: OrganizationName,
    pub role: OrgRole,
    pub expires_at: Option<chrono::DateTime<Utc>>,
    pub request: Option<CreateRequestId>,
}

impl TryFrom<proto::CreateServiceAccountRequest> for CreateServiceAccount {
    type Error = AppError;

    fn try_from(request: proto::CreateServiceAccountRequest) -> AppResult<Self> {
        // A service account edits or reads; managing stays with people.
        let role = parse_role("role", request.role).and_then(|role| match role {
            OrgRole::Owner => Err(FieldViolation::new(
                "role",
                "must be ORGANIZATION_ROLE_EDITOR or ORGANIZATION_ROLE_VIEWER",
            )),
            role => Ok(role),
        });
        let now = Utc::now();
        let expires_at = request
            .expire_time
            .as_ref()
            .map(|time| {
                convert::parse_timestamp("expire_time", time).and_then(|at| match at > now {
                    true => Ok(at),
                    false => Err(FieldViolation::new("expire_time", "must be in the future")),
                })
            })
            .transpose();
        let rest = proto::CreateServiceAccountRequest {
            request_id: String::new(),
            ..request.clone()
        };
        let (organization, name, role, expires_at, request) = parsed((
            OrganizationId::parse("organization_id", &request.organization_id),
            OrganizationName::parse("name", &request.name),
            role,
            expires_at,
            convert::create_request_id(&request.request_id, &rest, &[]),
        ))?;
        Ok(Self {
            organization,
            name,
            role,
            expires_at,
            request,
        })
    }
}

/// A new service account, with its token: shown once, never stored.
pub struct NewServiceAccountWithToken {
    pub service_account: ServiceAccount,
    pub token: ServiceAccountToken,
}

pub async fn create_service_account(
    state: &AppState,
    caller: &Caller,
    cmd: CreateServiceAccount,
) -> AppResult<NewServiceAccountWithToken> {
    let mut conn = state.db.conn().await?;
    ownership::managed_organization(&mut conn, &state.memberships, caller, cmd.organization)
        .await?;
    let retry = cmd
        .request
        .as_ref()
        .map(|request| retries::request_key(caller, "CreateServiceAccount", request));
    let source = SecretSource::new(state.webhook_signer.as_ref(), retry.as_ref(), TOKENS);
    let token = ServiceAccountToken::generate_with(&mut source.first());
    let digest = token.digest();
    let name = cmd.name.into_inner();
    let now = Utc::now();
    let new = NewServiceAccount {
        id: ServiceAccountId::generate(),
        organization_id: cmd.organization,
        name: &name,
        role: cmd.role.as_str(),
        token_prefix: token.display_prefix(),
        token_hash: &digest,
        created_by: caller.user_id(),
        created_at: Timestamp(now),
        expires_at: cmd.expires_at.map(Timestamp),
    };
    let target = AuditTarget::service_account(new.id, cmd.organization);
    let record = AuditRecord::new(AuditAction::ServiceAccountCreate, target)
        .with_changes(vec![AuditChange::values("role", "", cmd.role)]);
    let (retry, salt) = (retry.as_ref(), source.salt());
    // A new token: no cache holds it.
    let (service_account, first) = state
        .write(&mut conn, audit::actor(caller), None, |conn| {
            async move {
                if let Some(key) = retry {
                    if let Some(first) = retries::claim(conn, key, salt, now).await? {
                        let account = retries::first_created(
                            conn,
                            &first,
                            "service account",
                            ServiceAccountId::parse,
                            ServiceAccount::find,
                        );
                        return Ok(Written::unrecorded((account.await?, Some(first))));
                    }
                    CreateRequest::created(conn, key, &new.id.to_string()).await?;
                }
                let created = ServiceAccount::insert(conn, new).await.map_err(|error| {
                    match is_foreign_key_violation(&error) {
                        true => AppError::NotFound("organization"),
                        false => error.into(),
                    }
                })?;
                let record = record.with_state(state_of(created.clone()));
                Ok(Written::recorded((created, None), record))
            }
            .scope_boxed()
        })
        .await?;
    let Some(first) = first else {
        tracing::info!(
            organization_id = %cmd.organization,
            service_account_id = %service_account.id,
            "service account created"
        );
        return Ok(NewServiceAccountWithToken {
            service_account,
            token,
        });
    };
    // A retry: the first request's token, drawn again, if it can be.
    let token = ServiceAccountToken::generate_with(&mut source.again(
        &first,
        "service account",
        REPLACE_INSTEAD,
    )?);
    let holder = ServiceAccount::find_credential(&mut conn, &token.digest()).await?;
    if holder.is_none_or(|holder| holder.id != service_account.id) {
        return Err(retries::secret_changed("service account", REPLACE_INSTEAD));
    }
    Ok(NewServiceAccountWithToken {
        service_account,
        token,
    })
}

/// Names the stream a retried create's token is drawn from.
const TOKENS: &[u8; 32] = b"chatbot-backend svc account v1  ";
/// What to do when a retry cannot show the token again.
const REPLACE_INSTEAD: &str = "revoke the service account and create another";

pub async fn list_service_accounts(
    state: &AppState,
    caller: &Caller,
    cmd: ListOf<ServiceAccountId>,
) -> AppResult<Page<ServiceAccount>> {
    let organization = cmd.organization;
    let mut conn = state.db.conn().await?;
    ownership::managed_organization(&mut conn, &state.memberships, caller, organization).await?;
    let accounts = ServiceAccount::list(&mut conn, organization, &cmd.page).await?;
    Ok(cmd.page.page(accounts, ServiceAccount::cursor))
}

/// The service account, if the caller may manage its organization.
async fn managed(
    conn: &mut crate::db::DbConnection,
    state: &AppState,
    caller: &Caller,
    id: ServiceAccountId,
) -> AppResult<ServiceAccount> {
    let found = ServiceAccount::find(conn, id).await?.map(|account| {
        let organization = account.organization_id;
        (account, organization)
    });
    ownership::managed(conn, &state.memberships, caller, found, "service account").await
}

/// Revoking a revoked token changes nothing, and records nothing.
pub async fn revoke_service_account(
    state: &AppState,
    caller: &Caller,
    id: ServiceAccountId,
) -> AppResult<ServiceAccount> {
    let mut conn = state.db.conn().await?;
    let account = managed(&mut conn, state, caller, id).await?;
    let target = AuditTarget::service_account(id, account.organization_id);
    let record = AuditRecord::new(AuditAction::ServiceAccountRevoke, target);
    let stale = Some(Invalidation::ServiceAccount(id));
    let organization = Some(account.organization_id);
    let revoked = state
        .write_in(
            &mut conn,
            organization,
            audit::actor(caller),
            stale,
            |conn| {
                async move {
                    let revoked = ServiceAccount::revoke(conn, id, Utc::now()).await?;
                    let account = ServiceAccount::find(conn, id)
                        .await?
                        .ok_or(AppError::NotFound("service account"))?;
                    Ok(match revoked {
                        true => {
                            let record = record.with_state(state_of(account.clone()));
                            Written::recorded(account, record)
                        }
                        false => Written::unrecorded(account),
                    })
                }
                .scope_boxed()
            },
        )
        .await?;
    tracing::info!(service_account_id = %id, "service account revoked");
    Ok(revoked)
}

/// What the service account created stays: it belongs to the organization.
pub async fn delete_service_account(
    state: &AppState,
    caller: &Caller,
    id: ServiceAccountId,
) -> AppResult<()> {
    let mut conn = state.db.conn().await?;
    let account = managed(&mut conn, state, caller, id).await?;
    let target = AuditTarget::service_account(id, account.organization_id);
    let record = AuditRecord::new(AuditAction::ServiceAccountDelete, target);
    delete_row(
        state,
        &mut conn,
        Some(Invalidation::ServiceAccount(id)),
        "service account",
        (audit::actor(caller), record),
        move |conn| ServiceAccount::delete(conn, id).scope_boxed(),
    )
    .await?;
    tracing::info!(service_account_id = %id, "service account deleted");
    Ok(())
}

/// The request of ListServiceAccounts, parsed.
pub fn parse_list(
    request: proto::ListServiceAccountsRequest,
) -> AppResult<ListOf<ServiceAccountId>> {
    list_of(
        "service_accounts",
        &request.organization_id,
        request.page_size,
        &request.page_token,
    )
}

impl From<ServiceAccount> for proto::ServiceAccount {
    fn from(row: ServiceAccount) -> Self {
        proto::ServiceAccount {
            role: role_message(row.role()).into(),
            id: row.id.to_string(),
            organization_id: row.organization_id.to_string(),
            name: row.name,
            token_prefix: row.token_prefix,
            creator_id: row.created_by.map(|id| id.to_string()).unwrap_or_default(),
            create_time: Some(timestamp(row.created_at)),
            expire_time: row.expires_at.map(timestamp),
            revoke_time: row.revoked_at.map(timestamp),
            last_use_time: row.last_used_at.map(timestamp),
        }
    }
}

impl From<NewServiceAccountWithToken> for proto::CreateServiceAccountResponse {
    fn from(created: NewServiceAccountWithToken) -> Self {
        Self {
            service_account: Some(created.service_account.into()),
            token: created.token.expose().to_owned(),
        }
    }
}
