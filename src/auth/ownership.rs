//! What a caller may act on: the one place every service looks up a
//! chatbot or a key together with its owner and applies
//! [`Caller::authorize`] (permission before existence, AIP-193). Each
//! lookup is one indexed read.

use super::Caller;
use crate::db::models::{ApiKey, Chatbot};
use crate::db::DbConnection;
use crate::domain::{ApiKeyId, ChatbotId, UserId};
use crate::error::AppResult;

/// The chatbot, if the caller may act on it.
pub async fn chatbot(
    conn: &mut DbConnection,
    caller: &Caller,
    id: ChatbotId,
) -> AppResult<Chatbot> {
    authorize_chatbot(caller, Chatbot::find(conn, id).await?)
}

/// A chatbot already read (by GetChatbot's coalesced reads), if the caller
/// may act on it.
pub fn authorize_chatbot(caller: &Caller, found: Option<Chatbot>) -> AppResult<Chatbot> {
    let found = found.map(|chatbot| {
        let owner = chatbot.owner_id;
        (chatbot, owner)
    });
    caller.authorize(found, "chatbot")
}

/// The chatbot's owner, if the caller may act on it: for a call about the
/// chatbot's keys, which needs no more of the chatbot.
pub async fn chatbot_owner(
    conn: &mut DbConnection,
    caller: &Caller,
    id: ChatbotId,
) -> AppResult<UserId> {
    let owner = Chatbot::find_owner(conn, id).await?;
    caller.authorize(owner.map(|owner| (owner, owner)), "chatbot")
}

/// The key and its chatbot's owner, if the caller may act on the chatbot.
pub async fn api_key(
    conn: &mut DbConnection,
    caller: &Caller,
    id: ApiKeyId,
) -> AppResult<(ApiKey, UserId)> {
    let found = ApiKey::find_with_owner(conn, id).await?;
    caller.authorize(found.map(|(key, owner)| ((key, owner), owner)), "API key")
}
