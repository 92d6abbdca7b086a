//! ChatbotService. Authorization: users create and manage only their own
//! chatbots; admins manage all. A caller who may not see a chatbot gets
//! PERMISSION_DENIED whether or not it exists (AIP-193).

use std::sync::Arc;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::scoped_futures::ScopedFutureExt;
use tonic::{Request, Response, Status};

use super::api_key_cache::Invalidation;
use super::{convert, mask_paths, AppState};
use crate::auth::{caller, Caller};
use crate::db::models::{Chatbot, ChatbotChanges, NewChatbot};
use crate::db::sql_types::Timestamp;
use crate::db::DbConnection;
use crate::domain::{ChatbotId, ChatbotName, LlmEndpoint, PageRequest, UserId};
use crate::error::{AppError, AppResult, FieldViolation, Violations};
use crate::proto;
use crate::proto::chatbot_service_server::ChatbotService;

/// The ChatbotService implementation.
pub struct Chatbots {
    state: Arc<AppState>,
}

impl Chatbots {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

/// The one authorization rule of this service: the chatbot exists and the
/// caller owns it, or the caller is an admin. Non-admins cannot tell a
/// missing chatbot from someone else's.
pub async fn authorized_chatbot(
    conn: &mut DbConnection,
    caller: &Caller,
    id: ChatbotId,
) -> AppResult<Chatbot> {
    authorize(caller, Chatbot::find(conn, id).await?)
}

/// [`authorized_chatbot`]'s rule applied to a chatbot already looked up.
fn authorize(caller: &Caller, found: Option<Chatbot>) -> AppResult<Chatbot> {
    match found {
        Some(chatbot) if caller.may_act_for(chatbot.owner_id) => Ok(chatbot),
        Some(_) => Err(AppError::PermissionDenied),
        None if caller.is_admin() => Err(AppError::NotFound("chatbot")),
        None => Err(AppError::PermissionDenied),
    }
}

#[tonic::async_trait]
impl ChatbotService for Chatbots {
    async fn create_chatbot(
        &self,
        request: Request<proto::CreateChatbotRequest>,
    ) -> Result<Response<proto::CreateChatbotResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::new();
        let owner_id = if request.owner_id.is_empty() {
            Some(caller.user_id)
        } else {
            violations.check(UserId::parse("owner_id", &request.owner_id))
        };
        let name = violations.check(ChatbotName::parse("name", &request.name));
        let endpoint = violations.check(LlmEndpoint::parse(
            "llm_endpoint_url",
            &request.llm_endpoint_url,
            self.state.policy.allow_private_llm_endpoints,
        ));
        violations.finish()?;
        let (Some(owner_id), Some(name), Some(endpoint)) = (owner_id, name, endpoint) else {
            unreachable!("finish() returned Ok, so every field parsed");
        };
        if !caller.may_act_for(owner_id) {
            return Err(AppError::PermissionDenied.into());
        }

        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let new = NewChatbot {
            id: ChatbotId::generate(),
            owner_id,
            name: name.into_inner(),
            llm_endpoint_url: endpoint.into_inner(),
        };
        let chatbot = Chatbot::insert(&mut conn, &new)
            .await
            .map_err(|error| match error {
                DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
                    AppError::NotFound("owner")
                }
                other => other.into(),
            })?;
        tracing::info!(chatbot_id = %chatbot.id, owner_id = %chatbot.owner_id, "chatbot created");
        Ok(Response::new(proto::CreateChatbotResponse {
            chatbot: Some(convert::chatbot(chatbot)),
        }))
    }

    async fn get_chatbot(
        &self,
        request: Request<proto::GetChatbotRequest>,
    ) -> Result<Response<proto::GetChatbotResponse>, Status> {
        let caller = caller(&request)?;
        let id = ChatbotId::parse("id", &request.get_ref().id).map_err(AppError::from)?;
        let chatbot = authorize(&caller, self.state.chatbot_reads.find(id).await?)?;
        Ok(Response::new(proto::GetChatbotResponse {
            chatbot: Some(convert::chatbot(chatbot)),
        }))
    }

    async fn list_chatbots(
        &self,
        request: Request<proto::ListChatbotsRequest>,
    ) -> Result<Response<proto::ListChatbotsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::new();
        let owner = if request.owner_id.is_empty() {
            // Users see their own; admins see everyone's.
            (!caller.is_admin()).then_some(caller.user_id)
        } else {
            violations.check(UserId::parse("owner_id", &request.owner_id))
        };
        let filter = format!(
            "chatbots|owner={}",
            owner.map_or("*".into(), |o| o.to_string())
        );
        let page = violations.check(PageRequest::parse(
            request.page_size,
            &request.page_token,
            &filter,
        ));
        violations.finish()?;
        let Some(page) = page else {
            unreachable!("finish() returned Ok, so the page parsed");
        };
        if let Some(owner) = owner {
            if !caller.may_act_for(owner) {
                return Err(AppError::PermissionDenied.into());
            }
        }
        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let mut chatbots = Chatbot::list(&mut conn, owner, &page)
            .await
            .map_err(AppError::from)?;
        let next_page_token = page.finish(&mut chatbots, Chatbot::cursor);
        Ok(Response::new(proto::ListChatbotsResponse {
            chatbots: chatbots.into_iter().map(convert::chatbot).collect(),
            next_page_token,
        }))
    }

    async fn update_chatbot(
        &self,
        request: Request<proto::UpdateChatbotRequest>,
    ) -> Result<Response<proto::UpdateChatbotResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let Some(chatbot) = request.chatbot else {
            return Err(AppError::from(FieldViolation::new("chatbot", "is required")).into());
        };
        let mut violations = Violations::new();
        let id = violations.check(ChatbotId::parse("chatbot.id", &chatbot.id));
        let paths = mask_paths(
            request.update_mask.as_ref(),
            &["name", "llm_endpoint_url"],
            &["id", "owner_id", "create_time", "update_time"],
            &mut violations,
        );
        if paths.is_empty()
            && request
                .update_mask
                .as_ref()
                .is_none_or(|m| m.paths.is_empty())
        {
            violations.push(FieldViolation::new(
                "update_mask",
                "must name at least one field",
            ));
        }
        let name = paths
            .contains(&"name")
            .then(|| violations.check(ChatbotName::parse("chatbot.name", &chatbot.name)))
            .flatten();
        let endpoint = paths
            .contains(&"llm_endpoint_url")
            .then(|| {
                violations.check(LlmEndpoint::parse(
                    "chatbot.llm_endpoint_url",
                    &chatbot.llm_endpoint_url,
                    self.state.policy.allow_private_llm_endpoints,
                ))
            })
            .flatten();
        violations.finish()?;
        let Some(id) = id else {
            unreachable!("finish() returned Ok, so the id parsed");
        };

        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        authorized_chatbot(&mut conn, &caller, id).await?;
        let changes = ChatbotChanges {
            name: name.map(ChatbotName::into_inner),
            llm_endpoint_url: endpoint.map(LlmEndpoint::into_inner),
            updated_at: Some(Timestamp::now()),
        };
        // Verification answers carry the endpoint URL.
        let changes = &changes;
        let updated = self
            .state
            .commit_and_invalidate(&mut conn, Invalidation::Chatbot(id), |conn| {
                async move {
                    Chatbot::update(conn, id, changes)
                        .await?
                        .ok_or(AppError::NotFound("chatbot"))
                }
                .scope_boxed()
            })
            .await?;
        Ok(Response::new(proto::UpdateChatbotResponse {
            chatbot: Some(convert::chatbot(updated)),
        }))
    }

    async fn delete_chatbot(
        &self,
        request: Request<proto::DeleteChatbotRequest>,
    ) -> Result<Response<proto::DeleteChatbotResponse>, Status> {
        let caller = caller(&request)?;
        let id = ChatbotId::parse("id", &request.get_ref().id).map_err(AppError::from)?;
        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        authorized_chatbot(&mut conn, &caller, id).await?;
        self.state
            .commit_and_invalidate(&mut conn, Invalidation::Chatbot(id), |conn| {
                async move {
                    match Chatbot::delete(conn, id).await? {
                        true => Ok(()),
                        false => Err(AppError::NotFound("chatbot")),
                    }
                }
                .scope_boxed()
            })
            .await?;
        tracing::info!(chatbot_id = %id, "chatbot deleted with its keys");
        Ok(Response::new(proto::DeleteChatbotResponse {}))
    }
}
