//! GetApiKeyUsage and GetChatbotUsage (ApiKeyService): a key's usage
//! history, or all of a chatbot's keys' added up, for the chatbot's owner
//! or an admin. The counts come from [`crate::hot_path::usage`].

use chrono::Utc;

use super::convert;
use super::AppState;
use crate::auth::{ownership, Caller};
use crate::db::models::{HourlyUsage, KeyUsage};
use crate::domain::{ApiKeyId, ChatbotId, GetUsage, OrgAction, UsageRange};
use crate::error::{parsed, AppError, AppResult, FieldViolation};
use crate::proto;

/// Whose usage, and the range its optional start and end times give.
pub(super) fn usage_query<T>(
    of: Result<T, FieldViolation>,
    start_time: Option<&prost_types::Timestamp>,
    end_time: Option<&prost_types::Timestamp>,
) -> AppResult<GetUsage<T>> {
    let time = |field: &str, time: Option<&prost_types::Timestamp>| {
        time.map(|time| convert::parse_timestamp(field, time))
            .transpose()
    };
    let (of, start, end) = parsed((
        of,
        time("start_time", start_time),
        time("end_time", end_time),
    ))?;
    let range = UsageRange::new(start, end, Utc::now())?;
    Ok(GetUsage { of, range })
}

impl TryFrom<proto::GetApiKeyUsageRequest> for GetUsage<ApiKeyId> {
    type Error = AppError;

    #[allow(deprecated)] // id, for the clients that still send it
    fn try_from(request: proto::GetApiKeyUsageRequest) -> AppResult<Self> {
        let id = match (request.api_key_id, request.id) {
            (0, id) if id != 0 => ApiKeyId::parse("id", id),
            (api_key_id, id) if id == 0 || id == api_key_id => {
                ApiKeyId::parse("api_key_id", api_key_id)
            }
            _ => Err(FieldViolation::new(
                "api_key_id",
                "differs from id (deprecated): set api_key_id alone",
            )),
        };
        usage_query(id, request.start_time.as_ref(), request.end_time.as_ref())
    }
}

impl TryFrom<proto::GetChatbotUsageRequest> for GetUsage<ChatbotId> {
    type Error = AppError;

    fn try_from(request: proto::GetChatbotUsageRequest) -> AppResult<Self> {
        usage_query(
            ChatbotId::parse("chatbot_id", &request.chatbot_id),
            request.start_time.as_ref(),
            request.end_time.as_ref(),
        )
    }
}

pub async fn get_api_key_usage(
    state: &AppState,
    caller: &Caller,
    cmd: GetUsage<ApiKeyId>,
) -> AppResult<HourlyUsage> {
    let mut conn = state.db.conn().await?;
    let view = OrgAction::View;
    ownership::api_key(&mut conn, &state.memberships, caller, cmd.of, view).await?;
    Ok(KeyUsage::of_key(&mut conn, cmd.of, cmd.range).await?)
}

pub async fn get_chatbot_usage(
    state: &AppState,
    caller: &Caller,
    cmd: GetUsage<ChatbotId>,
) -> AppResult<HourlyUsage> {
    let mut conn = state.db.conn().await?;
    let view = OrgAction::View;
    ownership::chatbot_placement(&mut conn, &state.memberships, caller, cmd.of, view).await?;
    Ok(KeyUsage::of_chatbot(&mut conn, cmd.of, cmd.range).await?)
}
