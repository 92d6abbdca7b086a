//! How the caches learn that a row changed. A change commits together with
//! its NOTIFY ([`crate::db::write`], through
//! [`crate::services::AppState::write`]), so no replica can keep serving a
//! revoked key or an ended session because a notification was lost after
//! its commit; this replica drops the entries itself before the RPC answers
//! ([`CacheInvalidation::invalidate_here`]), and other replicas'
//! notifications arrive through the listener ([`CacheInvalidation::follow`]).

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;

use super::{ApiKeyCache, ChatbotCache, ChatbotPages, KnownKeys};
use crate::auth::{Memberships, ServiceAccounts, Sessions};
use crate::db::{Invalidation, ListenEvent};

/// Every cache of rows other replicas can change: the VerifyApiKey cache,
/// GetChatbot's, ListChatbots' pages, the sessions behind access tokens and
/// the organization memberships.
#[derive(Clone)]
pub struct CacheInvalidation {
    pub api_keys: Arc<ApiKeyCache>,
    pub chatbots: Arc<ChatbotCache>,
    /// Emptied by the triggers' announcements, not by [`Invalidation`]s.
    pub chatbot_pages: Arc<ChatbotPages>,
    pub sessions: Sessions,
    pub memberships: Memberships,
    pub service_accounts: ServiceAccounts,
    pub known_keys: Arc<KnownKeys>,
    /// 1 while the caches serve (they hear every change), for metrics.
    pub live: Gauge,
}

impl CacheInvalidation {
    /// Drops what a committed change made stale from this replica's caches
    /// (the local half of a write; also what the listener does with other
    /// replicas' notifications).
    pub fn invalidate_here(&self, change: &Invalidation) {
        self.api_keys.invalidate(change);
        self.chatbots.invalidate(change);
        self.sessions.cache().invalidate(change);
        self.memberships.cache().invalidate(change);
        self.service_accounts.cache().invalidate(change);
    }

    /// Applies what the PostgreSQL listener reports: the caches serve only
    /// while no notification can be missed, and a notification this
    /// version cannot read empties them rather than being ignored.
    pub fn follow(&self, event: ListenEvent) {
        match event {
            ListenEvent::Listening => {
                self.activate();
                self.known_keys.listening();
            }
            ListenEvent::Synced(sent_ms) => self.known_keys.synced(sent_ms),
            ListenEvent::KeyAnnounced(payload) => self.known_keys.announced(&payload),
            ListenEvent::ChatbotsChanged => self.chatbot_pages.clear(),
            ListenEvent::Lost => {
                self.live.set(0);
                self.known_keys.lost();
                self.api_keys.deactivate();
                self.chatbots.deactivate();
                self.chatbot_pages.deactivate();
                self.sessions.cache().deactivate();
                self.memberships.cache().deactivate();
                self.service_accounts.cache().deactivate();
            }
            ListenEvent::Notification(payload) => match Invalidation::parse(&payload) {
                Some(change) => self.invalidate_here(&change),
                None => {
                    self.api_keys.clear();
                    self.chatbots.clear();
                    self.chatbot_pages.clear();
                    self.sessions.cache().clear();
                    self.memberships.cache().clear();
                    self.service_accounts.cache().clear();
                }
            },
        }
    }

    /// Turns the caches on: when listening, or for a store only this process
    /// changes (SQLite), where [`Self::invalidate_here`] sees every change.
    pub fn activate(&self) {
        self.api_keys.activate();
        self.chatbots.activate();
        self.chatbot_pages.activate();
        self.sessions.cache().activate();
        self.memberships.cache().activate();
        self.service_accounts.cache().activate();
        self.live.set(1);
    }
}
