//! Which sessions are live, and the current role of their users: what the
//! auth layer checks on every authenticated call, so that signing out,
//! losing a role or being deleted takes effect at the next call instead of
//! when the access token expires.
//!
//! A warm replica answers from [`SessionCache`] without a query; changes
//! reach every replica's cache through the same invalidations as the
//! VerifyApiKey cache (see [`crate::cache`]).

use prometheus_client::metrics::counter::Counter;
use std::time::Duration;

use crate::cache::{Invalidated, InvalidatedCache, Lookup};
use crate::db::models::{LiveSession, Session};
use crate::db::{Database, Invalidation};
use crate::domain::SessionId;
use crate::error::AppResult;

/// Sessions held per replica; a miss costs one indexed query.
const CACHE_CAPACITY: usize = 100_000;
/// Bounds what a missed notification could leave behind; while the
/// listener is up none is missed, and while it is down the cache is off.
const CACHE_TTL: Duration = Duration::from_secs(30);

/// Session lookups: the live session, or `None` for one that ended or never
/// existed (an ended session never comes back, so that is cached too).
pub type SessionCache = InvalidatedCache<SessionId, Option<LiveSession>>;

impl Invalidated for LiveSession {
    fn is_stale_after(&self, change: &Invalidation) -> bool {
        match *change {
            Invalidation::Session(id) => self.id == id,
            Invalidation::Owner(id) => self.user_id == id,
            Invalidation::Key(_)
            | Invalidation::Chatbot(_)
            | Invalidation::Organization(_)
            | Invalidation::ServiceAccount(_) => false,
        }
    }
}

/// Looks sessions up through the cache.
#[derive(Clone)]
pub struct Sessions {
    cache: std::sync::Arc<SessionCache>,
    db: Database,
}

impl Sessions {
    /// Sessions of `db`, cached, counting cache lookups in `hits` and
    /// `misses`.
    pub fn new(db: Database, hits: Counter, misses: Counter) -> Self {
        let cache = SessionCache::new(CACHE_CAPACITY, CACHE_TTL).counting_lookups(hits, misses);
        Self {
            cache: std::sync::Arc::new(cache),
            db,
        }
    }

    pub fn cache(&self) -> &SessionCache {
        &self.cache
    }

    /// The session if it is live; UNAVAILABLE if that cannot be known.
    pub async fn live(&self, id: SessionId) -> AppResult<Option<LiveSession>> {
        match self.cache.get(&id) {
            Lookup::Hit(session) => Ok(session),
            Lookup::Miss(generation) => {
                let mut conn = self.db.conn().await?;
                let session = Session::find_live(&mut conn, id).await?;
                drop(conn);
                self.cache.insert(&id, session.clone(), generation);
                Ok(session)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Role, UserId};

    #[test]
    fn a_session_is_stale_after_it_ends_or_its_user_changes() {
        let session = LiveSession {
            id: SessionId::generate(),
            user_id: UserId::generate(),
            role: Role::Admin,
            email: "someone@example.com".into(),
        };
        assert!(session.is_stale_after(&Invalidation::Session(session.id)));
        assert!(session.is_stale_after(&Invalidation::Owner(session.user_id)));
        assert!(!session.is_stale_after(&Invalidation::Session(SessionId::generate())));
        assert!(!session.is_stale_after(&Invalidation::Owner(UserId::generate())));
    }
}
