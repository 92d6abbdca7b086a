//! ChatbotService. Authorization: users create and manage only their own
//! chatbots; admins manage all. A caller who may not see a chatbot gets
//! PERMISSION_DENIED whether or not it exists (AIP-193).

use std::sync::Arc;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::scoped_futures::ScopedFutureExt;
use tonic::Request;

use super::convert::mask_paths;
use super::{audit, delete_row, required, AppState, Policy, Rpc};
use crate::auth::{ownership, Caller};
use crate::db::models::{Chatbot, ChatbotChanges, NewChatbot};
use crate::db::{Invalidation, Written};
use crate::domain::{
    AuditAction, AuditChange, AuditRecord, AuditTarget, ChatbotId, ChatbotName, CreateChatbot,
    ListChatbots, LlmEndpoint, Page, PageRequest, UpdateChatbot, UserId,
};
use crate::error::{parsed, AppError, AppResult, FieldViolation, Violations};
use crate::proto;
use crate::proto::chatbot_service_server::ChatbotService;
use crate::proto::{
    CreateChatbotRequest, CreateChatbotResponse, DeleteChatbotRequest, DeleteChatbotResponse,
    GetChatbotRequest, GetChatbotResponse, ListChatbotsRequest, ListChatbotsResponse,
    UpdateChatbotRequest, UpdateChatbotResponse,
};

/// The ChatbotService implementation.
pub struct Chatbots(pub Arc<AppState>);

#[tonic::async_trait]
impl ChatbotService for Chatbots {
    async fn create_chatbot(
        &self,
        request: Request<CreateChatbotRequest>,
    ) -> Rpc<CreateChatbotResponse> {
        let parse =
            |message, caller: &Caller| CreateChatbot::parse(message, caller, &self.0.policy);
        self.0.serve(request, parse, create_chatbot).await
    }

    async fn get_chatbot(&self, request: Request<GetChatbotRequest>) -> Rpc<GetChatbotResponse> {
        let parse = |message: GetChatbotRequest| ChatbotId::parse("id", &message.id);
        self.0.serve(request, parse, get_chatbot).await
    }

    async fn list_chatbots(
        &self,
        request: Request<ListChatbotsRequest>,
    ) -> Rpc<ListChatbotsResponse> {
        let parse = ListChatbots::parse;
        self.0.serve(request, parse, list_chatbots).await
    }

    async fn update_chatbot(
        &self,
        request: Request<UpdateChatbotRequest>,
    ) -> Rpc<UpdateChatbotResponse> {
        let parse = |message| UpdateChatbot::parse(message, &self.0.policy);
        self.0.serve(request, parse, update_chatbot).await
    }

    async fn delete_chatbot(
        &self,
        request: Request<DeleteChatbotRequest>,
    ) -> Rpc<DeleteChatbotResponse> {
        let parse = |message: DeleteChatbotRequest| ChatbotId::parse("id", &message.id);
        self.0.serve(request, parse, delete_chatbot).await
    }
}

impl CreateChatbot {
    /// Without an `owner_id` the chatbot is the caller's.
    pub fn parse(
        request: proto::CreateChatbotRequest,
        caller: &Caller,
        policy: &Policy,
    ) -> AppResult<Self> {
        let owner_id = if request.owner_id.is_empty() {
            Ok(caller.user_id)
        } else {
            UserId::parse("owner_id", &request.owner_id)
        };
        let (owner_id, name, endpoint) = parsed((
            owner_id,
            ChatbotName::parse("name", &request.name),
            LlmEndpoint::parse(
                "llm_endpoint_url",
                &request.llm_endpoint_url,
                policy.allow_private_llm_endpoints,
            ),
        ))?;
        Ok(Self {
            owner_id,
            name,
            endpoint,
        })
    }
}

impl ListChatbots {
    /// Without an `owner_id`, users list their own and admins everyone's.
    /// The page token is bound to that resolved filter.
    pub fn parse(request: proto::ListChatbotsRequest, caller: &Caller) -> AppResult<Self> {
        let owner = if request.owner_id.is_empty() {
            Ok((!caller.is_admin()).then_some(caller.user_id))
        } else {
            UserId::parse("owner_id", &request.owner_id).map(Some)
        };
        let filter = format!(
            "chatbots|owner={}",
            owner
                .as_ref()
                .ok()
                .copied()
                .flatten()
                .map_or("*".into(), |o| o.to_string())
        );
        let page = PageRequest::parse(request.page_size, &request.page_token, &filter);
        let (owner, page) = parsed((owner, page))?;
        Ok(Self { owner, page })
    }
}

impl UpdateChatbot {
    pub fn parse(request: proto::UpdateChatbotRequest, policy: &Policy) -> AppResult<Self> {
        let chatbot = required(request.chatbot, "chatbot")?;
        let id = ChatbotId::parse("chatbot.id", &chatbot.id);
        let mut mask = Violations::new();
        let paths = mask_paths(
            request.update_mask.as_ref(),
            &["name", "llm_endpoint_url"],
            &["id", "owner_id", "create_time", "update_time"],
            &mut mask,
        );
        if paths.is_empty()
            && request
                .update_mask
                .as_ref()
                .is_none_or(|m| m.paths.is_empty())
        {
            mask.push(FieldViolation::new(
                "update_mask",
                "must name at least one field",
            ));
        }
        let name = paths
            .contains(&"name")
            .then(|| ChatbotName::parse("chatbot.name", &chatbot.name))
            .transpose();
        let endpoint = paths
            .contains(&"llm_endpoint_url")
            .then(|| {
                LlmEndpoint::parse(
                    "chatbot.llm_endpoint_url",
                    &chatbot.llm_endpoint_url,
                    policy.allow_private_llm_endpoints,
                )
            })
            .transpose();
        let (id, (), name, endpoint) = parsed((id, mask, name, endpoint))?;
        Ok(Self { id, name, endpoint })
    }
}

pub async fn create_chatbot(
    state: &AppState,
    caller: &Caller,
    cmd: CreateChatbot,
) -> AppResult<Chatbot> {
    caller.require_may_act_for(cmd.owner_id)?;
    let mut conn = state.db.conn().await?;
    let new = NewChatbot {
        id: ChatbotId::generate(),
        owner_id: cmd.owner_id,
        name: cmd.name.into_inner(),
        llm_endpoint_url: cmd.endpoint.into_inner(),
    };
    let new = &new;
    // A new chatbot: no cache holds it.
    let chatbot = state
        .write(&mut conn, audit::actor(caller), None, |conn| {
            async move {
                let chatbot = Chatbot::insert(conn, new)
                    .await
                    .map_err(|error| match error {
                        DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
                            AppError::NotFound("owner")
                        }
                        other => other.into(),
                    })?;
                let target = AuditTarget::chatbot(chatbot.id, chatbot.owner_id);
                let record = AuditRecord::new(AuditAction::ChatbotCreate, target);
                Ok(Written::recorded(chatbot, record))
            }
            .scope_boxed()
        })
        .await?;
    tracing::info!(chatbot_id = %chatbot.id, owner_id = %chatbot.owner_id, "chatbot created");
    Ok(chatbot)
}

/// Through the coalesced reads of [`crate::hot_path::read_coalescing`].
pub async fn get_chatbot(state: &AppState, caller: &Caller, id: ChatbotId) -> AppResult<Chatbot> {
    let found = state.chatbot_reads.find(id).await?;
    ownership::authorize_chatbot(caller, found)
}

pub async fn list_chatbots(
    state: &AppState,
    caller: &Caller,
    cmd: ListChatbots,
) -> AppResult<Page<Chatbot>> {
    if let Some(owner) = cmd.owner {
        caller.require_may_act_for(owner)?;
    }
    let mut conn = state.db.conn().await?;
    let chatbots = Chatbot::list(&mut conn, cmd.owner, &cmd.page).await?;
    Ok(cmd.page.page(chatbots, Chatbot::cursor))
}

/// Verification answers carry the endpoint URL, so the chatbot's keys go
/// stale in every replica's cache.
pub async fn update_chatbot(
    state: &AppState,
    caller: &Caller,
    cmd: UpdateChatbot,
) -> AppResult<Chatbot> {
    let id = cmd.id;
    let mut conn = state.db.conn().await?;
    ownership::chatbot(&mut conn, caller, id).await?;
    let changes = &ChatbotChanges {
        name: cmd.name.map(ChatbotName::into_inner),
        llm_endpoint_url: cmd.endpoint.map(LlmEndpoint::into_inner),
    };
    let stale = Some(Invalidation::Chatbot(id));
    state
        .write(&mut conn, audit::actor(caller), stale, |conn| {
            async move {
                // Locked, so the old values the audit log records are the
                // ones this update replaced.
                let old = match Chatbot::lock(conn, id).await? {
                    true => Chatbot::find(conn, id).await?,
                    false => None,
                }
                .ok_or(AppError::NotFound("chatbot"))?;
                let chatbot = Chatbot::update(conn, id, changes)
                    .await?
                    .ok_or(AppError::NotFound("chatbot"))?;
                let mut changed = Vec::new();
                if changes.name.is_some() {
                    changed.push(AuditChange::field("name"));
                }
                if changes.llm_endpoint_url.is_some() {
                    changed.push(AuditChange::values(
                        "llm_endpoint_url",
                        &old.llm_endpoint_url,
                        &chatbot.llm_endpoint_url,
                    ));
                }
                let target = AuditTarget::chatbot(id, chatbot.owner_id);
                let record =
                    AuditRecord::new(AuditAction::ChatbotUpdate, target).with_changes(changed);
                Ok(Written::recorded(chatbot, record))
            }
            .scope_boxed()
        })
        .await
}

pub async fn delete_chatbot(state: &AppState, caller: &Caller, id: ChatbotId) -> AppResult<()> {
    let mut conn = state.db.conn().await?;
    let chatbot = ownership::chatbot(&mut conn, caller, id).await?;
    let target = AuditTarget::chatbot(id, chatbot.owner_id);
    let record = AuditRecord::new(AuditAction::ChatbotDelete, target);
    delete_row(
        state,
        &mut conn,
        Invalidation::Chatbot(id),
        "chatbot",
        (audit::actor(caller), record),
        move |conn| Chatbot::delete(conn, id).scope_boxed(),
    )
    .await?;
    tracing::info!(chatbot_id = %id, "chatbot deleted with its keys");
    Ok(())
}
