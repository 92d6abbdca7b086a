//! ChatbotService. Chatbots belong to organizations: their members read
//! them, editors and owners change them ([`OrgAction`]); admins manage all.
//! A caller who may not see a chatbot gets PERMISSION_DENIED whether or not
//! it exists (AIP-193).

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use chrono::Utc;
use diesel_async::scoped_futures::ScopedFutureExt;
use prost::{EncodeError, Message};
use tonic::Request;

use super::convert::{self, required_mask_paths};
use super::encoded::{self, AnsweredMethod, WriteAnswer};
use super::events::state_of;
use super::{audit, delete_row, required, retries, AppState, Policy, Rpc};
use crate::auth::{ownership, Caller};
use crate::db::models::{
    Chatbot, ChatbotChanges, ChatbotFilter, CreateRequest, Member, NewChatbot, Organization,
};
use crate::db::DbConnection;
use crate::db::{Invalidation, Written};
use crate::domain::{
    AuditAction, AuditChange, AuditRecord, AuditTarget, ChatbotId, ChatbotName, CreateChatbot,
    ListChatbots, LlmEndpoint, OrgAction, OrganizationId, PageRequest, UpdateChatbot, UserId,
};
use crate::error::{parsed, AppError, AppResult, FieldViolation, Violations};
use crate::hot_path::chatbot_pages::PageKey;
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
        let page: Rpc<ListedPage> = self.0.serve(request, parse, list_chatbots).await;
        encoded::as_message(page)
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

/// The path [`ListChatbotsMethod`] serves.
pub const LIST_CHATBOTS_PATH: &str = "/chatbot.v1.ChatbotService/ListChatbots";

/// ListChatbots as the server serves it: pages written as the bytes they
/// were encoded to, from memory when cached ([`crate::hot_path::chatbot_pages`]).
#[derive(Clone)]
pub struct ListChatbotsMethod(pub Arc<AppState>);

impl AnsweredMethod for ListChatbotsMethod {
    type Request = ListChatbotsRequest;
    type Answer = ListedPage;

    async fn call(&self, request: Request<ListChatbotsRequest>) -> Rpc<ListedPage> {
        self.0
            .serve(request, ListChatbots::parse, list_chatbots)
            .await
    }
}

/// A ListChatbots answer, encoded.
pub struct ListedPage(Bytes);

impl WriteAnswer for ListedPage {
    fn write(self, buf: &mut impl BufMut) -> Result<(), EncodeError> {
        // Both buffers it is written to grow (tonic's and a Vec).
        buf.put_slice(&self.0);
        Ok(())
    }
}

impl CreateChatbot {
    /// The chatbot goes to the organization named, else to the personal
    /// organization of the (deprecated) owner named, else to the caller's.
    #[allow(deprecated)] // owner_id, for the clients that still send it
    pub fn parse(
        request: proto::CreateChatbotRequest,
        caller: &Caller,
        policy: &Policy,
    ) -> AppResult<Self> {
        let organization = match (&*request.organization_id, &*request.owner_id) {
            ("", "") => Ok(caller.home_organization()),
            (organization, "") => OrganizationId::parse("organization_id", organization),
            ("", owner) => UserId::parse("owner_id", owner).map(OrganizationId::personal),
            (_, _) => Err(FieldViolation::new(
                "owner_id",
                "must be empty when organization_id is set (owner_id is deprecated)",
            )),
        };
        let rest = proto::CreateChatbotRequest {
            request_id: String::new(),
            ..request.clone()
        };
        let (organization, name, endpoint, request_id) = parsed((
            organization,
            ChatbotName::parse("name", &request.name),
            LlmEndpoint::parse(
                "llm_endpoint_url",
                &request.llm_endpoint_url,
                policy.allow_private_llm_endpoints,
            ),
            convert::create_request_id(&request.request_id, &rest, &[]),
        ))?;
        Ok(Self {
            organization,
            name,
            endpoint,
            request: request_id,
        })
    }
}

impl ListChatbots {
    /// The page token is bound to the filters.
    #[allow(deprecated)] // owner_id, for the clients that still send it
    pub fn parse(request: proto::ListChatbotsRequest) -> AppResult<Self> {
        let optional = |field: &str, value: &str| {
            (!value.is_empty())
                .then(|| uuid::Uuid::parse_str(value))
                .transpose()
                .map_err(|_| FieldViolation::new(field, "must be a UUID"))
        };
        let filter = format!(
            "chatbots|organization={}|owner={}",
            request.organization_id, request.owner_id
        );
        let page = PageRequest::parse(request.page_size, &request.page_token, &filter);
        let (organization, owner, page) = parsed((
            optional("organization_id", &request.organization_id),
            optional("owner_id", &request.owner_id),
            page,
        ))?;
        Ok(Self {
            organization: organization.map(OrganizationId),
            owner: owner.map(UserId),
            page,
        })
    }
}

impl UpdateChatbot {
    pub fn parse(request: proto::UpdateChatbotRequest, policy: &Policy) -> AppResult<Self> {
        let chatbot = required(request.chatbot, "chatbot")?;
        let id = ChatbotId::parse("chatbot.id", &chatbot.id);
        let mut mask = Violations::new();
        let paths = required_mask_paths(
            request.update_mask.as_ref(),
            &["name", "llm_endpoint_url"],
            &["id", "owner_id", "create_time", "update_time"],
            &mut mask,
        );
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

/// The chatbot's owner_id is the person accountable: a personal
/// organization's user, else the member creating it. An organization
/// deleted meanwhile fails the insert (its foreign key), so no chatbot is
/// ever left without one.
pub async fn create_chatbot(
    state: &AppState,
    caller: &Caller,
    cmd: CreateChatbot,
) -> AppResult<Chatbot> {
    let mut conn = state.db.conn().await?;
    let own_personal = caller
        .user_id()
        .filter(|user| OrganizationId::personal(*user) == cmd.organization);
    let owner_id = match own_personal {
        // The caller's own personal organization: its person is known, and
        // the insert's foreign key proves it exists, so it is not read.
        Some(user) => {
            let edit = OrgAction::Edit;
            ownership::require_on(
                &mut conn,
                &state.memberships,
                caller,
                cmd.organization,
                edit,
            )
            .await?;
            user
        }
        None => {
            let organization = ownership::organization(
                &mut conn,
                &state.memberships,
                caller,
                cmd.organization,
                OrgAction::Edit,
            )
            .await?;
            accountable_for(&mut conn, &organization, caller).await?
        }
    };
    let new = NewChatbot {
        id: ChatbotId::generate(),
        organization_id: cmd.organization,
        owner_id,
        name: cmd.name.into_inner(),
        llm_endpoint_url: cmd.endpoint.into_inner(),
    };
    let new = &new;
    let retry = cmd
        .request
        .as_ref()
        .map(|request| retries::request_key(caller, "CreateChatbot", request));
    let Some(retry) = retry.as_ref() else {
        // No request id to claim: the insert and its records are one
        // statement on PostgreSQL (see db::insert).
        let (chatbot, insert) = Chatbot::insertion(new);
        let target = AuditTarget::chatbot(chatbot.id, chatbot.owner_id, chatbot.organization_id);
        let record = AuditRecord::new(AuditAction::ChatbotCreate, target)
            .with_state(state_of(chatbot.clone()));
        crate::db::insert(&mut conn, audit::actor(caller), record, insert)
            .await
            .map_err(organization_gone)?;
        tracing::info!(chatbot_id = %chatbot.id, owner_id = %chatbot.owner_id, "chatbot created");
        return Ok(chatbot);
    };
    // A new chatbot: no cache holds it.
    let chatbot = state
        .write(&mut conn, audit::actor(caller), None, |conn| {
            async move {
                if let Some(first) = retries::claim(conn, retry, None, Utc::now()).await? {
                    let chatbot = retries::first_created(
                        conn,
                        &first,
                        "chatbot",
                        ChatbotId::parse,
                        Chatbot::find,
                    );
                    return Ok(Written::unrecorded(chatbot.await?));
                }
                let chatbot = Chatbot::insert(conn, new)
                    .await
                    .map_err(organization_gone)?;
                CreateRequest::created(conn, retry, &chatbot.id.to_string()).await?;
                let target =
                    AuditTarget::chatbot(chatbot.id, chatbot.owner_id, chatbot.organization_id);
                let record = AuditRecord::new(AuditAction::ChatbotCreate, target)
                    .with_state(state_of(chatbot.clone()));
                Ok(Written::recorded(chatbot, record))
            }
            .scope_boxed()
        })
        .await?;
    tracing::info!(chatbot_id = %chatbot.id, owner_id = %chatbot.owner_id, "chatbot created");
    Ok(chatbot)
}

/// A chatbot's insert failing its foreign key: its organization (or the
/// person accountable) was deleted meanwhile.
fn organization_gone(error: diesel::result::Error) -> AppError {
    match crate::db::is_foreign_key_violation(&error) {
        true => AppError::NotFound("organization"),
        false => error.into(),
    }
}

/// Through the coalesced reads of [`crate::hot_path::read_coalescing`].
pub async fn get_chatbot(state: &AppState, caller: &Caller, id: ChatbotId) -> AppResult<Chatbot> {
    let found = state.chatbot_reads.find(id).await?;
    ownership::authorize_chatbot(&state.memberships, caller, found, OrgAction::View).await
}

/// A user (not an admin) lists only the organizations they belong to, and
/// by (deprecated) owner only their own chatbots.
pub async fn list_chatbots(
    state: &AppState,
    caller: &Caller,
    cmd: ListChatbots,
) -> AppResult<ListedPage> {
    if let Some(owner) = cmd.owner {
        caller.require_may_act_for(owner)?;
    }
    // A service account sees its own organization only.
    let organization = match caller.service_account() {
        Some(account) => Some(cmd.organization.unwrap_or(account.organization)),
        None => cmd.organization,
    };
    if let Some(organization) = organization {
        ownership::require(&state.memberships, caller, organization, OrgAction::View).await?;
    }
    let filter = ChatbotFilter {
        organization,
        owner: cmd.owner,
        member: caller.user_id().filter(|_| !caller.is_admin()),
    };
    let key = PageKey::new(&filter, &cmd.page);
    let read = async || {
        let mut conn = state.db.conn().await?;
        let chatbots = Chatbot::list(&mut conn, &filter, &cmd.page).await?;
        let page = ListChatbotsResponse::from(cmd.page.page(chatbots, Chatbot::cursor));
        Ok::<_, AppError>(Bytes::from(page.encode_to_vec()))
    };
    state
        .caches
        .chatbot_pages
        .page(key, read)
        .await
        .map(ListedPage)
}

/// Who a new chatbot in `organization` is accountable to (its owner_id):
/// a personal organization's person, else the person creating it; for a
/// service account, the organization's longest-standing owner.
async fn accountable_for(
    conn: &mut DbConnection,
    organization: &Organization,
    caller: &Caller,
) -> AppResult<UserId> {
    if let Some(person) = organization.personal_user_id.or(caller.user_id()) {
        return Ok(person);
    }
    Member::longest_standing_owner(conn, organization.id, None)
        .await?
        .ok_or(AppError::FailedPrecondition(
            "the organization has no owner".into(),
        ))
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
    let edit = OrgAction::Edit;
    ownership::chatbot(&mut conn, &state.memberships, caller, id, edit).await?;
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
                let target = AuditTarget::chatbot(id, chatbot.owner_id, chatbot.organization_id);
                let record = AuditRecord::new(AuditAction::ChatbotUpdate, target)
                    .with_changes(changed)
                    .with_state(state_of(chatbot.clone()));
                Ok(Written::recorded(chatbot, record))
            }
            .scope_boxed()
        })
        .await
}

pub async fn delete_chatbot(state: &AppState, caller: &Caller, id: ChatbotId) -> AppResult<()> {
    let mut conn = state.db.conn().await?;
    let edit = OrgAction::Edit;
    let chatbot = ownership::chatbot(&mut conn, &state.memberships, caller, id, edit).await?;
    let target = AuditTarget::chatbot(id, chatbot.owner_id, chatbot.organization_id);
    let record = AuditRecord::new(AuditAction::ChatbotDelete, target);
    delete_row(
        state,
        &mut conn,
        Some(Invalidation::Chatbot(id)),
        "chatbot",
        (audit::actor(caller), record),
        move |conn| Chatbot::delete(conn, id).scope_boxed(),
    )
    .await?;
    tracing::info!(chatbot_id = %id, "chatbot deleted with its keys");
    Ok(())
}
