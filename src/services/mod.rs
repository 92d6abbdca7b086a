//! The tonic services. Each file (or folder) is one service and reads top
//! to bottom: the handlers, then how each request parses into a domain
//! command, then the operations, which return [`AppResult`] and are
//! callable without tonic. Every handler is one call of [`AppState::serve`]
//! (or [`AppState::serve_public`]): parse, run one operation, convert its
//! result, the one place an [`AppError`] becomes a `Status`. Every write
//! goes through [`AppState::write`]: its transaction, audit records and
//! cache invalidation cannot be forgotten one without the others.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod chatbots;
pub mod convert;
pub mod encoded;
pub mod events;
pub mod external_authorization;
pub mod lifecycle_events;
pub mod organizations;
pub mod retries;
pub mod service_accounts;
pub mod status;
pub mod usage;
pub mod users;
pub mod webhooks;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::auth::{
    caller, optional_caller, Caller, LoginThrottle, Memberships, PasswordHasher, RequestId,
    ServiceAccounts, Sessions, TokenKeys,
};
use diesel::QueryResult;
use diesel_async::scoped_futures::{ScopedBoxFuture, ScopedFutureExt};

use crate::db::models::AuditActor;
use crate::db::{self, Database, DbConnection, Invalidation, Written};
use crate::domain::{AuditAction, AuditRecord, AuditTarget, OrganizationId};
use crate::error::{AppError, AppResult, FieldViolation};
use crate::hot_path::{ApiKeyCache, CacheInvalidation, ChatbotReads};
use crate::proto::RpcRequest;
use crate::rate_limit::RateLimits;
use crate::verification::KeyVerifier;

/// Policy knobs the handlers need.
#[derive(Debug, Clone)]
pub struct Policy {
    pub allow_signup: bool,
    pub allow_private_llm_endpoints: bool,
    /// Webhook URLs may name private hosts (tests, on-premise receivers).
    pub allow_private_webhook_targets: bool,
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
    /// Who belongs to which organization (cached; see [`Memberships`]).
    pub memberships: Memberships,
    /// Service accounts' tokens (cached; see [`ServiceAccounts`]).
    pub service_accounts: ServiceAccounts,
    pub api_key_cache: Arc<ApiKeyCache>,
    /// Every change to a cached row commits through here.
    pub caches: CacheInvalidation,
    pub chatbot_reads: ChatbotReads,
    /// VerifyApiKey's and Check's decision.
    pub verifier: KeyVerifier,
    pub rate_limits: RateLimits,
    pub policy: Policy,
    /// Derives webhooks' signing secrets; `None` without a SECRET_KEY.
    pub webhook_signer: Option<crate::domain::WebhookSigner>,
}

/// What every handler returns.
pub type Rpc<T> = Result<Response<T>, Status>;

/// Who a public RPC's call comes from: the session's user if the call
/// carried a valid access token, and the peer's address.
pub struct Origin {
    pub caller: Option<Caller>,
    pub address: Option<IpAddr>,
    pub request_id: Option<RequestId>,
}

impl AppState {
    /// The shape of every RPC that needs a session: the caller (else
    /// UNAUTHENTICATED), the message parsed into a command (INVALID_ARGUMENT
    /// with every field violation), one operation, its result converted.
    pub async fn serve<M: RpcRequest, C, O, R, Takes>(
        &self,
        request: Request<M>,
        parse: impl Parse<M, C, Takes>,
        operation: impl AsyncFnOnce(&AppState, &Caller, C) -> AppResult<O>,
    ) -> Rpc<R>
    where
        R: From<O>,
    {
        let caller = caller(&request)?;
        let command = parse.parse(request.into_inner(), &caller)?;
        let output = operation(self, &caller, command).await;
        if let Err(AppError::PermissionDenied) = output {
            self.audit_denial::<M>(&audit::actor(&caller)).await;
        }
        Ok(Response::new(output?.into()))
    }

    /// [`serve`](Self::serve) for the RPCs anyone may call.
    pub async fn serve_public<M: RpcRequest, C, E, O, R>(
        &self,
        request: Request<M>,
        parse: impl FnOnce(M) -> Result<C, E>,
        operation: impl AsyncFnOnce(&AppState, &Origin, C) -> AppResult<O>,
    ) -> Rpc<R>
    where
        AppError: From<E>,
        R: From<O>,
    {
        let origin = Origin {
            caller: optional_caller(&request),
            address: request.remote_addr().map(|addr| addr.ip()),
            request_id: request.extensions().get::<RequestId>().cloned(),
        };
        let command = parse(request.into_inner()).map_err(AppError::from)?;
        let output = operation(self, &origin, command).await;
        if let Err(AppError::PermissionDenied) = output {
            self.audit_denial::<M>(&audit::public_actor(&origin, None))
                .await;
        }
        Ok(Response::new(output?.into()))
    }

    /// Records a PERMISSION_DENIED answer to the RPC taking `M`, named by
    /// its gRPC method name.
    async fn audit_denial<M: RpcRequest>(&self, actor: &AuditActor) {
        let target = AuditTarget::rpc(M::METHOD);
        let record = AuditRecord::new(AuditAction::PermissionDenied, target);
        audit::record_refusal(self, actor, &record).await;
    }
}

/// How [`AppState::serve`] turns a message into a command: a function of
/// the message (`UpdateUser::try_from`), or of the message and the caller
/// (`ListChatbots::parse`), failing with anything that becomes an
/// [`AppError`] (a [`FieldViolation`], say). `Takes` tells the two apart.
pub trait Parse<M, C, Takes> {
    fn parse(self, message: M, caller: &Caller) -> AppResult<C>;
}

/// [`Parse`] by a function of the message alone.
pub struct TheMessage;

/// [`Parse`] by a function of the message and the caller.
pub struct TheMessageAndCaller;

impl<M, C, E, F> Parse<M, C, TheMessage> for F
where
    F: FnOnce(M) -> Result<C, E>,
    AppError: From<E>,
{
    fn parse(self, message: M, _: &Caller) -> AppResult<C> {
        Ok(self(message)?)
    }
}

impl<M, C, E, F> Parse<M, C, TheMessageAndCaller> for F
where
    F: FnOnce(M, &Caller) -> Result<C, E>,
    AppError: From<E>,
{
    fn parse(self, message: M, caller: &Caller) -> AppResult<C> {
        Ok(self(message, caller)?)
    }
}

/// The parse step of an RPC whose request has no fields.
fn no_fields<M>(_: M) -> AppResult<()> {
    Ok(())
}

impl AppState {
    /// The shape of every write ([`db::write`]): `change`, the audit
    /// records it returns (as done by `actor`) and the notification that
    /// tells every replica what went `stale` commit in one transaction; then
    /// the stale entries leave this replica's caches, before the RPC
    /// answers. A change to nothing any cache holds (a new row) passes
    /// `None`.
    pub async fn write<'a, R, F>(
        &self,
        conn: &mut DbConnection,
        actor: AuditActor,
        stale: Option<Invalidation>,
        change: F,
    ) -> AppResult<R>
    where
        F: for<'r> FnOnce(&'r mut DbConnection) -> ScopedBoxFuture<'a, 'r, AppResult<Written<R>>>
            + Send
            + 'a,
        R: Send + 'a,
    {
        self.write_in(conn, None, actor, stale, change).await
    }

    /// [`Self::write`] through [`db::write_in`]: for a change to rows that
    /// deleting `organization` deletes with them.
    pub async fn write_in<'a, R, F>(
        &self,
        conn: &mut DbConnection,
        organization: Option<OrganizationId>,
        actor: AuditActor,
        stale: Option<Invalidation>,
        change: F,
    ) -> AppResult<R>
    where
        F: for<'r> FnOnce(&'r mut DbConnection) -> ScopedBoxFuture<'a, 'r, AppResult<Written<R>>>
            + Send
            + 'a,
        R: Send + 'a,
    {
        let value = db::write_in(conn, organization, actor, stale, change).await?;
        if let Some(stale) = &stale {
            self.caches.invalidate_here(stale);
        }
        Ok(value)
    }
}

/// Deletes a row through [`AppState::write`]; NOT_FOUND (naming `what`) if
/// the row was already gone, and then nothing is recorded. `stale` is what
/// the caches held of it, if anything.
async fn delete_row<'a, F>(
    state: &AppState,
    conn: &mut DbConnection,
    stale: Option<Invalidation>,
    what: &'static str,
    (actor, record): (AuditActor, AuditRecord),
    delete: F,
) -> AppResult<()>
where
    F: for<'r> FnOnce(&'r mut DbConnection) -> ScopedBoxFuture<'a, 'r, QueryResult<bool>>
        + Send
        + 'a,
{
    let organization = record.target.organization;
    let deleted = state
        .write_in(conn, organization, actor, stale, move |conn| {
            async move {
                Ok(match delete(conn).await? {
                    true => Written::recorded(true, record),
                    false => Written::unrecorded(false),
                })
            }
            .scope_boxed()
        })
        .await?;
    if deleted {
        Ok(())
    } else {
        Err(AppError::NotFound(what))
    }
}

/// An update's resource message, which the update cannot do without.
fn required<T>(resource: Option<T>, field: &str) -> Result<T, FieldViolation> {
    resource.ok_or_else(|| FieldViolation::new(field, "is required"))
}
