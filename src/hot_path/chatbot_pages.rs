//! ListChatbots' pages answered from memory: a page listed lately is sent
//! again as the bytes it was encoded to, with no query, no row decoding and
//! no encoding.
//!
//! A page is kept under what decides its rows (the filters, the size and
//! the cursor) and dropped when any chatbot or membership changes anywhere:
//! triggers on `chatbots` and `organization_members` notify every replica
//! when a change to either commits, whichever replica or version made it
//! ([`crate::db::CHATBOT_CHANGES_CHANNEL`]), and the listener empties this
//! cache when it hears one. Lists are read far more often than chatbots
//! and memberships change, so dropping every page is simpler than working
//! out which a change reaches, and costs little.
//!
//! A cached page reflects every change committed before the request
//! arrived, on any replica: before answering from one, the call waits for a
//! barrier (the listener has heard everything committed before it was
//! asked; see [`super::known_keys`]), which calls arriving together share.
//! A page that is not cached is read from the store at once. Who may list
//! what is decided at every call, before the cache is asked.
//!
//! PostgreSQL only: a SQLite file has no listener, and its lists are read
//! each time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;

use super::KnownKeys;
use crate::cache::{Invalidated, InvalidatedCache, Lookup};
use crate::db::models::ChatbotFilter;
use crate::db::Invalidation;
use crate::domain::{ChatbotId, OrganizationId, PageRequest, UserId};

/// Pages larger than this are read each time: a few such pages would hold
/// more memory than thousands of ordinary ones (50 chatbots take about 10
/// KiB).
pub const MAX_CACHED_PAGE_BYTES: usize = 64 * 1024;

/// What decides a page's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageKey {
    organization: Option<OrganizationId>,
    owner: Option<UserId>,
    member: Option<UserId>,
    size: i64,
    after: Option<(DateTime<Utc>, ChatbotId)>,
    /// The filters as asked, which the next page's token is bound to: a
    /// service account's list with and without its organization named
    /// selects the same rows but must not share a token.
    tokens_bound_to: u64,
}

impl PageKey {
    pub fn new(filter: &ChatbotFilter, page: &PageRequest<ChatbotId>) -> Self {
        Self {
            organization: filter.organization,
            owner: filter.owner,
            member: filter.member,
            size: page.size,
            after: page
                .after
                .as_ref()
                .map(|after| (after.create_time, after.id)),
            tokens_bound_to: page.filter_fingerprint(),
        }
    }
}

/// A ListChatbots answer, encoded.
#[derive(Clone)]
pub struct EncodedPage(pub Bytes);

/// Not used by the listener, which empties the cache on any change to
/// chatbots or memberships; this says the same for a caller that asks.
impl Invalidated for EncodedPage {
    fn is_stale_after(&self, change: &Invalidation) -> bool {
        match change {
            Invalidation::Chatbot(_) | Invalidation::Owner(_) | Invalidation::Organization(_) => {
                true
            }
            Invalidation::Key(_) | Invalidation::Session(_) | Invalidation::ServiceAccount(_) => {
                false
            }
        }
    }
}

/// The cache of ListChatbots' pages.
pub struct ChatbotPages {
    pages: InvalidatedCache<PageKey, EncodedPage>,
    /// Whose barriers prove a cached page current.
    listener: Arc<KnownKeys>,
}

impl ChatbotPages {
    /// `capacity` pages of at most [`MAX_CACHED_PAGE_BYTES`]; 0 turns the
    /// cache off. It serves once [`Self::activate`]d.
    pub fn new(capacity: usize, ttl: Duration, listener: Arc<KnownKeys>) -> Self {
        Self {
            pages: InvalidatedCache::new(capacity, ttl),
            listener,
        }
    }

    /// Counts lookups in `hits` and `misses` (metrics the caller exports).
    pub fn counting_lookups(mut self, hits: Counter, misses: Counter) -> Self {
        self.pages = self.pages.counting_lookups(hits, misses);
        self
    }

    /// The page under `key`, from the cache if it holds one that nothing
    /// committed before this call has changed, else from `read` (cached
    /// for the next call if small enough).
    pub async fn page<E>(
        &self,
        key: PageKey,
        read: impl AsyncFnOnce() -> Result<Bytes, E>,
    ) -> Result<Bytes, E> {
        // A cached page is served only after a barrier; an uncached one is
        // read now (a page another call caches meanwhile is not served
        // without one: its read may have begun before a change this call
        // must see).
        let generation = if self.pages.contains(&key) {
            if !self.listener.barrier().await {
                return read().await;
            }
            match self.pages.get(&key) {
                Lookup::Hit(page) => return Ok(page.0),
                Lookup::Miss(generation) => generation,
            }
        } else {
            self.pages.bypass()
        };
        let page = read().await?;
        if page.len() <= MAX_CACHED_PAGE_BYTES {
            self.pages
                .insert(&key, EncodedPage(page.clone()), generation);
        }
        Ok(page)
    }

    /// A chatbot or membership changed somewhere.
    pub fn clear(&self) {
        self.pages.clear();
    }

    pub fn activate(&self) {
        self.pages.activate();
    }

    pub fn deactivate(&self) {
        self.pages.deactivate();
    }
}
