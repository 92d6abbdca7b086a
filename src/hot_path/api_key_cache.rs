//! The VerifyApiKey cache: verifying a hot key does not reach the database.
//! Entries hold the row, not the answer, so revocation and expiry are judged
//! at every read and a key expiring (say, at the end of a rotation grace
//! period) needs no invalidation. The machinery is [`crate::cache`].

use std::sync::Arc;

pub use crate::cache::Lookup;
use crate::cache::{Invalidated, InvalidatedCache};
use crate::db::models::VerificationRecord;
pub use crate::db::Invalidation;
use crate::domain::ApiKeyDigest;

/// Lookups by digest: the key's row, or `None` for a key that does not exist.
pub type ApiKeyCache = InvalidatedCache<ApiKeyDigest, Option<Arc<VerificationRecord>>>;

impl Invalidated for VerificationRecord {
    fn is_stale_after(&self, change: &Invalidation) -> bool {
        match *change {
            // A replaced key's row also carries its replacement's limits.
            Invalidation::Key(id) => self.id == id || self.limits_key_id == id,
            Invalidation::Chatbot(id) => self.chatbot_id == id,
            Invalidation::Owner(id) => self.owner_id == id,
            Invalidation::Organization(id) => self.organization_id == id,
            Invalidation::Session(_) | Invalidation::ServiceAccount(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{ApiKeyId, ChatbotId, UserId};

    #[test]
    fn a_key_row_is_stale_after_a_change_to_its_key_chatbot_or_owner_only() {
        let (chatbot, owner) = (ChatbotId::generate(), UserId::generate());
        let record = VerificationRecord {
            id: ApiKeyId(1),
            limits_key_id: ApiKeyId(1),
            chatbot_id: chatbot,
            revoked: false,
            expires_at: None,
            owner_id: owner,
            organization_id: crate::domain::OrganizationId::personal(owner),
            llm_endpoint_url: "https://llm.example.com".into(),
            rate_limit: None,
            credits_remaining: None,
            organization_rate_limit: None,
            organization_has_credits: false,
            grants: None,
            encoded: Default::default(),
        };
        assert!(record.is_stale_after(&Invalidation::Key(ApiKeyId(1))));
        assert!(record.is_stale_after(&Invalidation::Chatbot(chatbot)));
        assert!(record.is_stale_after(&Invalidation::Owner(owner)));
        assert!(!record.is_stale_after(&Invalidation::Key(ApiKeyId(2))));
        assert!(!record.is_stale_after(&Invalidation::Owner(UserId::generate())));

        let cache = ApiKeyCache::new(64, Duration::from_secs(60));
        cache.activate();
        let digest = ApiKeyDigest([7; 32]);
        let Lookup::Miss(generation) = cache.get(&digest) else {
            panic!("an empty cache has no hits");
        };
        cache.insert(&digest, Some(Arc::new(record)), generation);
        cache.invalidate(&Invalidation::Chatbot(chatbot));
        assert!(matches!(cache.get(&digest), Lookup::Miss(_)));
    }
}
