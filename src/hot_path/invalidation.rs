//! How the caches learn that a row changed. A change commits together with
//! its NOTIFY ([`CacheInvalidation::commit_and_invalidate`]), so no replica
//! can keep serving a revoked key or an ended session because a
//! notification was lost after its commit; this replica drops the entries
//! itself before the RPC answers, and other replicas' notifications arrive
//! through the listener ([`CacheInvalidation::follow`]).

use std::sync::Arc;

use diesel_async::scoped_futures::{ScopedBoxFuture, ScopedFutureExt};

use super::ApiKeyCache;
use crate::auth::Sessions;
use crate::db::{self, DbConnection, Invalidation, ListenEvent};
use crate::error::{AppError, AppResult};

/// Every cache of rows other replicas can change: the VerifyApiKey cache
/// and the sessions behind access tokens.
#[derive(Clone)]
pub struct CacheInvalidation {
    api_keys: Arc<ApiKeyCache>,
    sessions: Sessions,
}

impl CacheInvalidation {
    pub fn new(api_keys: Arc<ApiKeyCache>, sessions: Sessions) -> Self {
        Self { api_keys, sessions }
    }

    /// Runs `change` in a transaction that also tells every replica what it
    /// makes stale (PostgreSQL delivers the NOTIFY at commit, and only if it
    /// commits), then drops the same entries here. Every change to a cached
    /// row goes through here.
    pub async fn commit_and_invalidate<'a, R, F>(
        &self,
        conn: &mut DbConnection,
        stale: Invalidation,
        change: F,
    ) -> AppResult<R>
    where
        F: for<'r> FnOnce(&'r mut DbConnection) -> ScopedBoxFuture<'a, 'r, AppResult<R>>
            + Send
            + 'a,
        R: Send + 'a,
    {
        let result = conn
            .transaction(|conn| {
                async move {
                    let result = change(&mut *conn).await?;
                    db::notify_invalidation(conn, &stale).await?;
                    Ok::<_, AppError>(result)
                }
                .scope_boxed()
            })
            .await?;
        self.invalidate_here(&stale);
        Ok(result)
    }

    /// Drops what a committed change made stale from this replica's caches
    /// (the local half of [`Self::commit_and_invalidate`]; also what the
    /// listener does with other replicas' notifications).
    pub fn invalidate_here(&self, change: &Invalidation) {
        self.api_keys.invalidate(change);
        self.sessions.cache().invalidate(change);
    }

    /// Applies what the PostgreSQL listener reports: the caches serve only
    /// while no notification can be missed, and a notification this
    /// version cannot read empties them rather than being ignored.
    pub fn follow(&self, event: ListenEvent) {
        match event {
            ListenEvent::Listening => self.activate(),
            ListenEvent::Lost => {
                self.api_keys.deactivate();
                self.sessions.cache().deactivate();
            }
            ListenEvent::Notification(payload) => match Invalidation::parse(&payload) {
                Some(change) => self.invalidate_here(&change),
                None => {
                    self.api_keys.clear();
                    self.sessions.cache().clear();
                }
            },
        }
    }

    /// Turns the caches on: when listening, or for a store only this process
    /// changes (SQLite), where [`Self::invalidate_here`] sees every change.
    pub fn activate(&self) {
        self.api_keys.activate();
        self.sessions.cache().activate();
    }
}
