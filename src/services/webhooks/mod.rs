//! WebhookService: an organization's owners register endpoints its events
//! are delivered to ([`crate::delivery::webhooks`] delivers them), list each
//! one's deliveries and send one again. A webhook's signing secret is shown
//! once, at creation, and never stored (see [`crate::domain::WebhookSigner`]).

mod responses;

use diesel_async::scoped_futures::ScopedFutureExt;
use rand::RngCore;
use tonic::Request;

use super::convert::{self, required_mask_paths};
use super::events::state_of;
use super::{audit, delete_row, required, retries, AppState, Rpc};
use crate::auth::{ownership, Caller};
use crate::db::models::{
    webhook, CreateRequest, NewWebhook, Organization, OrganizationEvent, Webhook, WebhookChanges,
    WebhookDelivery,
};
use crate::db::sql_types::Timestamp;
use crate::db::{is_foreign_key_violation, DbConnection, Written};
use crate::domain::{
    url_origin, AuditAction, AuditChange, AuditRecord, AuditTarget, CreateRequestId, DisplayText,
    FieldViolation, LlmEndpoint, OrganizationId, Page, PageCursor, PageRequest, WebhookDeliveryId,
    WebhookId,
};
use crate::error::{parsed, AppError, AppResult, Violations};
use crate::proto::webhook_service_server::WebhookService;
use crate::proto::*;

/// Webhooks an organization may have: each one is a delivery stream to
/// keep up with.
pub const MAX_WEBHOOKS_PER_ORGANIZATION: i64 = 20;

/// At most this many event types per webhook (there are fewer types).
const MAX_EVENT_TYPES: usize = 64;

/// The WebhookService implementation.
pub struct Webhooks(pub std::sync::Arc<AppState>);

#[tonic::async_trait]
impl WebhookService for Webhooks {
    async fn create_webhook(
        &self,
        request: Request<CreateWebhookRequest>,
    ) -> Rpc<CreateWebhookResponse> {
        let allow_private = self.0.policy.allow_private_webhook_targets;
        let parse = |message| CreateWebhook::parse(message, allow_private);
        self.0.serve(request, parse, create_webhook).await
    }

    async fn get_webhook(&self, request: Request<GetWebhookRequest>) -> Rpc<GetWebhookResponse> {
        let parse = |message: GetWebhookRequest| WebhookId::parse("id", &message.id);
        self.0.serve(request, parse, get_webhook).await
    }

    async fn list_webhooks(
        &self,
        request: Request<ListWebhooksRequest>,
    ) -> Rpc<ListWebhooksResponse> {
        let parse = |message: ListWebhooksRequest| {
            OrganizationId::parse("organization_id", &message.organization_id)
        };
        self.0.serve(request, parse, list_webhooks).await
    }

    async fn update_webhook(
        &self,
        request: Request<UpdateWebhookRequest>,
    ) -> Rpc<UpdateWebhookResponse> {
        let allow_private = self.0.policy.allow_private_webhook_targets;
        let parse = |message| UpdateWebhook::parse(message, allow_private);
        self.0.serve(request, parse, update_webhook).await
    }

    async fn delete_webhook(
        &self,
        request: Request<DeleteWebhookRequest>,
    ) -> Rpc<DeleteWebhookResponse> {
        let parse = |message: DeleteWebhookRequest| WebhookId::parse("id", &message.id);
        self.0.serve(request, parse, delete_webhook).await
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<ListWebhookDeliveriesRequest>,
    ) -> Rpc<ListWebhookDeliveriesResponse> {
        self.0
            .serve(request, ListDeliveries::try_from, list_deliveries)
            .await
    }

    async fn redeliver_webhook(
        &self,
        request: Request<RedeliverWebhookRequest>,
    ) -> Rpc<RedeliverWebhookResponse> {
        let parse = |message: RedeliverWebhookRequest| {
            WebhookDeliveryId::parse("delivery_id", &message.delivery_id)
        };
        self.0.serve(request, parse, redeliver).await
    }
}

/// A webhook's fields as a request sets them.
#[derive(Debug)]
struct Endpoint {
    url: Option<LlmEndpoint>,
    event_types: Option<Vec<String>>,
    description: Option<String>,
}

fn parse_event_types(types: &[String]) -> Result<Vec<String>, FieldViolation> {
    if types.len() > MAX_EVENT_TYPES {
        return Err(FieldViolation::new(
            "webhook.event_types",
            format!("must hold at most {MAX_EVENT_TYPES} types"),
        ));
    }
    let mut parsed: Vec<String> = Vec::new();
    for name in types {
        let action = AuditAction::parse("webhook.event_types", name).map_err(|_| {
            FieldViolation::new(
                "webhook.event_types",
                format!("{name:?} is not an event type (docs/walkthrough.md lists them)"),
            )
        })?;
        if !parsed.iter().any(|known| known == action.name()) {
            parsed.push(action.name().to_owned());
        }
    }
    Ok(parsed)
}

fn parse_description(description: &str) -> Result<String, FieldViolation> {
    Ok(DisplayText::parse("webhook.description", description, 200)?
        .as_str()
        .to_owned())
}

/// CreateWebhook, parsed.
#[derive(Debug)]
pub struct CreateWebhook {
    organization: OrganizationId,
    url: LlmEndpoint,
    event_types: Vec<String>,
    description: String,
    request: Option<CreateRequestId>,
}

impl CreateWebhook {
    fn parse(request: CreateWebhookRequest, allow_private: bool) -> AppResult<Self> {
        let rest = CreateWebhookRequest {
            request_id: String::new(),
            ..request.clone()
        };
        let webhook = request.webhook.unwrap_or_default();
        let (organization, url, event_types, description, request_id) = parsed((
            OrganizationId::parse("organization_id", &request.organization_id),
            LlmEndpoint::parse("webhook.url", &webhook.url, allow_private),
            parse_event_types(&webhook.event_types),
            parse_description(&webhook.description),
            convert::create_request_id(&request.request_id, &rest, &[]),
        ))?;
        Ok(Self {
            organization,
            url,
            event_types,
            description,
            request: request_id,
        })
    }
}

/// UpdateWebhook, parsed.
#[derive(Debug)]
pub struct UpdateWebhook {
    id: WebhookId,
    endpoint: Endpoint,
    state: Option<bool>,
}

impl UpdateWebhook {
    fn parse(request: UpdateWebhookRequest, allow_private: bool) -> AppResult<Self> {
        let webhook = required(request.webhook, "webhook")?;
        let id = WebhookId::parse("webhook.id", &webhook.id);
        let mut mask = Violations::new();
        let paths = required_mask_paths(
            request.update_mask.as_ref(),
            &["url", "event_types", "description", "state"],
            &[
                "id",
                "organization_id",
                "disabled_reason",
                "create_time",
                "update_time",
            ],
            &mut mask,
        );
        let has = |path: &str| paths.contains(&path);
        let url = has("url")
            .then(|| LlmEndpoint::parse("webhook.url", &webhook.url, allow_private))
            .transpose();
        let event_types = has("event_types")
            .then(|| parse_event_types(&webhook.event_types))
            .transpose();
        let description = has("description")
            .then(|| parse_description(&webhook.description))
            .transpose();
        let state = has("state")
            .then(|| match WebhookState::try_from(webhook.state) {
                Ok(WebhookState::Active) => Ok(true),
                Ok(WebhookState::Disabled) => Ok(false),
                _ => Err(FieldViolation::new(
                    "webhook.state",
                    "must be WEBHOOK_STATE_ACTIVE or WEBHOOK_STATE_DISABLED",
                )),
            })
            .transpose();
        let (id, (), url, event_types, description, state) =
            parsed((id, mask, url, event_types, description, state))?;
        Ok(Self {
            id,
            endpoint: Endpoint {
                url,
                event_types,
                description,
            },
            state,
        })
    }
}

/// ListWebhookDeliveries, parsed.
#[derive(Debug)]
pub struct ListDeliveries {
    webhook: WebhookId,
    page: PageRequest<WebhookDeliveryId>,
}

impl TryFrom<ListWebhookDeliveriesRequest> for ListDeliveries {
    type Error = AppError;

    fn try_from(request: ListWebhookDeliveriesRequest) -> AppResult<Self> {
        let filter = format!("webhook_deliveries|webhook={}", request.webhook_id);
        let (webhook, page) = parsed((
            WebhookId::parse("webhook_id", &request.webhook_id),
            PageRequest::parse(request.page_size, &request.page_token, &filter),
        ))?;
        Ok(Self { webhook, page })
    }
}

/// A new webhook, with its signing secret: shown once, never stored.
pub struct CreatedWebhook {
    webhook: Webhook,
    signing_secret: String,
}

/// The webhook, for a caller who manages its organization; PERMISSION_DENIED
/// for anyone else whether or not it exists.
async fn managed(
    conn: &mut DbConnection,
    state: &AppState,
    caller: &Caller,
    id: WebhookId,
) -> AppResult<Webhook> {
    let found = Webhook::find(conn, id).await?.map(|webhook| {
        let organization = webhook.organization_id;
        (webhook, organization)
    });
    ownership::managed(conn, &state.memberships, caller, found, "webhook").await
}

async fn create_webhook(
    state: &AppState,
    caller: &Caller,
    cmd: CreateWebhook,
) -> AppResult<CreatedWebhook> {
    let signer = state.webhook_signer.as_ref().ok_or_else(|| {
        AppError::FailedPrecondition(
            "webhooks need the server's SECRET_KEY set (their signing secrets derive from it)"
                .into(),
        )
    })?;
    let mut conn = state.db.conn().await?;
    ownership::managed_organization(&mut conn, &state.memberships, caller, cmd.organization)
        .await?;
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let id = WebhookId::generate();
    let url = cmd.url.into_inner();
    let now = Timestamp::now();
    let new = NewWebhook {
        id,
        organization_id: cmd.organization,
        url: &url,
        event_types: WebhookChanges::event_types_json(&cmd.event_types),
        description: &cmd.description,
        state: webhook::ACTIVE,
        disabled_reason: "",
        secret_salt: &salt,
        delivered_sequence: 0,
        created_by: caller.user_id(),
        created_at: now,
        updated_at: now,
    };
    let new = &new;
    let organization = cmd.organization;
    let retry = cmd
        .request
        .as_ref()
        .map(|request| retries::request_key(caller, "CreateWebhook", request));
    let retry = retry.as_ref();
    let webhook = state
        .write(&mut conn, audit::actor(caller), None, |conn| {
            async move {
                // The organization's row, locked: concurrent creates count
                // one after another, so none goes past the limit.
                if !Organization::lock(conn, organization).await? {
                    return Err(AppError::NotFound("organization"));
                }
                if let Some(key) = retry {
                    if let Some(first) = retries::claim(conn, key, None, chrono::Utc::now()).await?
                    {
                        let webhook = retries::first_created(
                            conn,
                            &first,
                            "webhook",
                            WebhookId::parse,
                            Webhook::find,
                        );
                        return Ok(Written::unrecorded(webhook.await?));
                    }
                    CreateRequest::created(conn, key, &id.to_string()).await?;
                }
                // The webhook starts after the newest event committed
                // before it (one still uncommitted gets a later number).
                let sequence = OrganizationEvent::latest(conn, organization).await?;
                if Webhook::count_of(conn, organization).await? >= MAX_WEBHOOKS_PER_ORGANIZATION {
                    return Err(AppError::FailedPrecondition(format!(
                        "the organization has {MAX_WEBHOOKS_PER_ORGANIZATION} webhooks, the most \
                         it may have; delete one first"
                    )));
                }
                let new = NewWebhook {
                    delivered_sequence: sequence,
                    event_types: new.event_types.clone(),
                    ..*new
                };
                let webhook = Webhook::insert(conn, &new).await.map_err(|error| {
                    match is_foreign_key_violation(&error) {
                        true => AppError::NotFound("organization"),
                        false => error.into(),
                    }
                })?;
                let record = AuditRecord::new(
                    AuditAction::WebhookCreate,
                    AuditTarget::webhook(id, organization),
                )
                .with_changes(vec![AuditChange::values(
                    "url",
                    "",
                    url_origin(&webhook.url),
                )])
                .with_state(state_of(webhook.clone()));
                Ok(Written::recorded(webhook, record))
            }
            .scope_boxed()
        })
        .await?;
    // The first request's webhook, on a retry: its own id and salt.
    let signing_secret = signer.secret(&webhook.id.0, &webhook.secret_salt).expose();
    tracing::info!(webhook_id = %webhook.id, organization_id = %organization, "webhook created");
    Ok(CreatedWebhook {
        webhook,
        signing_secret,
    })
}

async fn get_webhook(state: &AppState, caller: &Caller, id: WebhookId) -> AppResult<Webhook> {
    let mut conn = state.db.conn().await?;
    managed(&mut conn, state, caller, id).await
}

async fn list_webhooks(
    state: &AppState,
    caller: &Caller,
    organization: OrganizationId,
) -> AppResult<Vec<Webhook>> {
    let mut conn = state.db.conn().await?;
    ownership::managed_organization(&mut conn, &state.memberships, caller, organization).await?;
    Ok(Webhook::of_organization(&mut conn, organization, MAX_WEBHOOKS_PER_ORGANIZATION).await?)
}

async fn update_webhook(
    state: &AppState,
    caller: &Caller,
    cmd: UpdateWebhook,
) -> AppResult<Webhook> {
    let mut conn = state.db.conn().await?;
    let current = managed(&mut conn, state, caller, cmd.id).await?;
    let mut changed = Vec::new();
    let mut changes = WebhookChanges::default();
    if let Some(url) = cmd.endpoint.url {
        let url = url.into_inner();
        changed.push(AuditChange::values(
            "url",
            url_origin(&current.url),
            url_origin(&url),
        ));
        changes.url = Some(url);
    }
    if let Some(types) = &cmd.endpoint.event_types {
        changed.push(AuditChange::field("event_types"));
        changes.event_types = Some(WebhookChanges::event_types_json(types));
    }
    if let Some(description) = cmd.endpoint.description {
        changed.push(AuditChange::field("description"));
        changes.description = Some(description);
    }
    if let Some(active) = cmd.state {
        let state = if active {
            webhook::ACTIVE
        } else {
            webhook::DISABLED
        };
        changed.push(AuditChange::values("state", &current.state, state));
        changes.state = Some(state);
        changes.disabled_reason = Some(String::new());
        // Enabled again: the next event is due at once.
        if active {
            changes.retry_at = Some(None);
        }
    }
    let id = cmd.id;
    let organization = current.organization_id;
    let changes = &changes;
    state
        .write_in(
            &mut conn,
            Some(organization),
            audit::actor(caller),
            None,
            |conn| {
                async move {
                    let webhook = Webhook::update(conn, id, changes)
                        .await?
                        .ok_or(AppError::NotFound("webhook"))?;
                    let record = AuditRecord::new(
                        AuditAction::WebhookUpdate,
                        AuditTarget::webhook(id, organization),
                    )
                    .with_changes(changed)
                    .with_state(state_of(webhook.clone()));
                    Ok(Written::recorded(webhook, record))
                }
                .scope_boxed()
            },
        )
        .await
}

async fn delete_webhook(state: &AppState, caller: &Caller, id: WebhookId) -> AppResult<()> {
    let mut conn = state.db.conn().await?;
    let current = managed(&mut conn, state, caller, id).await?;
    let record = AuditRecord::new(
        AuditAction::WebhookDelete,
        AuditTarget::webhook(id, current.organization_id),
    );
    // No cache holds a webhook.
    delete_row(
        state,
        &mut conn,
        None,
        "webhook",
        (audit::actor(caller), record),
        |conn| Webhook::delete(conn, id).scope_boxed(),
    )
    .await?;
    tracing::info!(webhook_id = %id, "webhook deleted");
    Ok(())
}

async fn list_deliveries(
    state: &AppState,
    caller: &Caller,
    cmd: ListDeliveries,
) -> AppResult<Page<WebhookDelivery>> {
    let mut conn = state.db.conn().await?;
    managed(&mut conn, state, caller, cmd.webhook).await?;
    let before = cmd
        .page
        .after
        .as_ref()
        .map(|cursor| (cursor.create_time, cursor.id));
    let rows =
        WebhookDelivery::list(&mut conn, cmd.webhook, before, cmd.page.fetch_limit()).await?;
    Ok(cmd.page.page(rows, |row| PageCursor {
        create_time: row.created_at,
        id: row.id,
    }))
}

async fn redeliver(
    state: &AppState,
    caller: &Caller,
    id: WebhookDeliveryId,
) -> AppResult<WebhookDelivery> {
    let mut conn = state.db.conn().await?;
    // Permission first: whether a delivery exists is the organization's.
    let delivery = WebhookDelivery::find(&mut conn, id).await?;
    let webhook = delivery.as_ref().map(|delivery| delivery.webhook_id);
    let found = match webhook {
        Some(webhook) => Webhook::find(&mut conn, webhook)
            .await?
            .map(|webhook| ((), webhook.organization_id)),
        None => None,
    };
    ownership::managed(&mut conn, &state.memberships, caller, found, "delivery").await?;
    let delivery = delivery.ok_or(AppError::NotFound("delivery"))?;
    let again = WebhookDelivery::redeliver(&mut conn, &delivery).await?;
    tracing::info!(delivery_id = %id, redelivery_id = %again.id, "webhook redelivery requested");
    Ok(again)
}
