//! Service accounts' tokens, as the auth layer checks them on every call:
//! a warm replica answers from [`ServiceAccountCache`] without a query, and
//! a revocation (or the account's or its organization's deletion) commits
//! with an invalidation, so the token stops working at its next call on
//! every replica (see [`crate::cache`]). Expiry is judged at every call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use prometheus_client::metrics::counter::Counter;

use crate::cache::{Invalidated, InvalidatedCache, Lookup};
use crate::db::models::{ServiceAccount, ServiceAccountCredential};
use crate::db::{Database, Invalidation};
use crate::domain::{OrganizationId, ServiceAccountId};
use crate::error::AppResult;

/// Tokens held per replica; a miss costs one probe of the digest index.
const CACHE_CAPACITY: usize = 10_000;
/// Bounds what a missed notification could leave behind, as for sessions.
const CACHE_TTL: Duration = Duration::from_secs(30);
/// A token's last use is written at most this often per replica: a
/// service calling a thousand times a second must not write as often.
const LAST_USE_EVERY: Duration = Duration::from_secs(60);
/// Service accounts whose last use this replica remembers writing; beyond
/// it the memory is cleared (costing at most one early write each).
const LAST_USE_REMEMBERED: usize = 10_000;

/// Lookups by the digest of a presented token: the credential, or `None`
/// for a token that matches none.
pub type ServiceAccountCache = InvalidatedCache<[u8; 32], Option<Arc<ServiceAccountCredential>>>;

impl Invalidated for ServiceAccountCredential {
    fn is_stale_after(&self, change: &Invalidation) -> bool {
        match *change {
            Invalidation::ServiceAccount(id) => self.id == id,
            Invalidation::Organization(id) => self.organization_id == id,
            // A user's deletion takes their personal organization, and its
            // service accounts, with it.
            Invalidation::Owner(user) => self.organization_id == OrganizationId::personal(user),
            Invalidation::Key(_) | Invalidation::Chatbot(_) | Invalidation::Session(_) => false,
        }
    }
}

/// Looks service accounts' tokens up through the cache, and records their
/// use.
#[derive(Clone)]
pub struct ServiceAccounts {
    cache: Arc<ServiceAccountCache>,
    last_use_written: Arc<Mutex<HashMap<ServiceAccountId, Instant>>>,
    db: Database,
}

impl ServiceAccounts {
    pub fn new(db: Database, hits: Counter, misses: Counter) -> Self {
        let cache =
            ServiceAccountCache::new(CACHE_CAPACITY, CACHE_TTL).counting_lookups(hits, misses);
        Self {
            cache: Arc::new(cache),
            last_use_written: Arc::default(),
            db,
        }
    }

    pub fn cache(&self) -> &ServiceAccountCache {
        &self.cache
    }

    /// The credential the token with this digest belongs to, if it works
    /// now (not revoked, not expired); UNAVAILABLE if that cannot be known.
    pub async fn live(&self, digest: [u8; 32]) -> AppResult<Option<Arc<ServiceAccountCredential>>> {
        let credential = match self.cache.get(&digest) {
            Lookup::Hit(credential) => credential,
            Lookup::Miss(generation) => {
                let mut conn = self.db.conn().await?;
                let found = ServiceAccount::find_credential(&mut conn, &digest)
                    .await?
                    .map(Arc::new);
                drop(conn);
                self.cache.insert(&digest, found.clone(), generation);
                found
            }
        };
        Ok(credential.filter(|credential| credential.is_live_at(Utc::now())))
    }

    /// Records that the account called, at most once a minute per replica,
    /// in the background: the call does not wait for it, and a failure to
    /// record is only logged.
    pub fn record_use(&self, id: ServiceAccountId) {
        let now = Instant::now();
        {
            let mut written = self
                .last_use_written
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if written
                .get(&id)
                .is_some_and(|at| now.duration_since(*at) < LAST_USE_EVERY)
            {
                return;
            }
            if written.len() >= LAST_USE_REMEMBERED {
                written.clear();
            }
            written.insert(id, now);
        }
        let db = self.db.clone();
        tokio::spawn(async move {
            let recorded = async {
                let mut conn = db.conn().await?;
                ServiceAccount::record_use(&mut conn, id, Utc::now()).await?;
                Ok::<_, crate::error::AppError>(())
            }
            .await;
            if let Err(error) = recorded {
                tracing::debug!(service_account_id = %id, %error, "could not record a service account's last use");
            }
        });
    }
}
