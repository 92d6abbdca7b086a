//! Last-used times of API keys, written in batches: VerifyApiKey records a
//! use in memory, and a periodic flush (and one at shutdown) writes them all
//! in one transaction, so verification never writes per call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use crate::db::models::ApiKey;
use crate::db::Database;
use crate::domain::ApiKeyId;

/// Collects successful verifications until the next [`Self::flush`].
#[derive(Clone, Default)]
pub struct LastUsedRecorder {
    pending: Arc<Mutex<HashMap<ApiKeyId, DateTime<Utc>>>>,
}

impl LastUsedRecorder {
    pub fn record(&self, id: ApiKeyId, at: DateTime<Utc>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // Callers race: a slower one must not replace a newer time.
        pending
            .entry(id)
            .and_modify(|t| *t = (*t).max(at))
            .or_insert(at);
    }

    /// Writes everything recorded so far; on failure the batch is put back
    /// (keeping newer times) for the next attempt.
    pub async fn flush(&self, db: &Database) -> anyhow::Result<usize> {
        let mut batch: Vec<(ApiKeyId, DateTime<Utc>)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().collect()
        };
        // In key order, so replicas flushing overlapping keys at once lock
        // their rows in the same order and cannot deadlock (a HashMap's
        // order differs per process).
        batch.sort_unstable_by_key(|&(id, _)| id);
        if batch.is_empty() {
            return Ok(0);
        }
        let result = async {
            let mut conn = db.conn().await?;
            let batch = &batch;
            // One transaction: one commit for the whole batch.
            let updated = conn
                .transaction(|conn| {
                    async move { ApiKey::record_last_used(conn, batch).await }.scope_boxed()
                })
                .await?;
            anyhow::Ok(updated)
        }
        .await;
        if result.is_err() {
            for (id, at) in batch {
                self.record(id, at);
            }
        }
        result
    }
}
