//! GetChatbot's cache: reading a chatbot that was read lately costs no
//! query. It holds the row only; who may read it is decided at every call
//! (from the caller's memberships, themselves cached and invalidated the
//! same way). The machinery is [`crate::cache`], as for VerifyApiKey's
//! cache: every change to a chatbot's row commits with an invalidation that
//! drops it here before the RPC answers and on every other replica through
//! PostgreSQL `NOTIFY`, so a replica serves a row at most as old as the
//! notification takes to arrive, and none while it cannot hear them.
//!
//! The changes that reach a chatbot's row, and what they invalidate:
//! UpdateChatbot and DeleteChatbot (the chatbot), and deleting a user, which
//! deletes their personal chatbots and hands their team chatbots to another
//! owner (the user, as the chatbot's `owner_id`).

use std::sync::Arc;

use crate::cache::{Invalidated, InvalidatedCache};
use crate::db::models::Chatbot;
use crate::db::Invalidation;
use crate::domain::ChatbotId;

/// Chatbots by id. Only rows that exist are cached: a chatbot that does not
/// exist is not a path worth a cache entry.
pub type ChatbotCache = InvalidatedCache<ChatbotId, Arc<Chatbot>>;

impl Invalidated for Chatbot {
    fn is_stale_after(&self, change: &Invalidation) -> bool {
        match *change {
            Invalidation::Chatbot(id) => self.id == id,
            Invalidation::Owner(id) => self.owner_id == id,
            // Nothing an organization's change alters is in the row, but a
            // deleted organization takes nothing with it unseen.
            Invalidation::Organization(id) => self.organization_id == id,
            Invalidation::Key(_) | Invalidation::Session(_) | Invalidation::ServiceAccount(_) => {
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;

    use super::*;
    use crate::cache::Lookup;
    use crate::domain::{ApiKeyId, OrganizationId, UserId};

    #[test]
    fn a_chatbot_row_is_stale_after_a_change_to_it_its_owner_or_its_organization() {
        let owner = UserId::generate();
        let chatbot = Chatbot {
            id: ChatbotId::generate(),
            owner_id: owner,
            name: "bot".into(),
            llm_endpoint_url: "https://llm.example.com".into(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            organization_id: OrganizationId::personal(owner),
        };
        assert!(chatbot.is_stale_after(&Invalidation::Chatbot(chatbot.id)));
        assert!(chatbot.is_stale_after(&Invalidation::Owner(owner)));
        assert!(chatbot.is_stale_after(&Invalidation::Organization(chatbot.organization_id)));
        assert!(!chatbot.is_stale_after(&Invalidation::Chatbot(ChatbotId::generate())));
        assert!(!chatbot.is_stale_after(&Invalidation::Owner(UserId::generate())));
        assert!(!chatbot.is_stale_after(&Invalidation::Key(ApiKeyId(1))));

        let cache = ChatbotCache::new(16, Duration::from_secs(60));
        cache.activate();
        let id = chatbot.id;
        let Lookup::Miss(generation) = cache.get(&id) else {
            panic!("an empty cache has no hits");
        };
        cache.insert(&id, Arc::new(chatbot), generation);
        assert!(matches!(cache.get(&id), Lookup::Hit(_)));
        cache.invalidate(&Invalidation::Owner(owner));
        assert!(matches!(cache.get(&id), Lookup::Miss(_)));
    }
}
