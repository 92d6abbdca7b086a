//! Usage history, counted like last-used times: VerifyApiKey counts each
//! answer for a known key in memory, per key and hour, and a periodic flush
//! (and one at shutdown) adds the counts to the store in one transaction.
//! So no verification writes on its own, and each replica's counts add to
//! the others' (the store adds, it never overwrites). A replica killed
//! without a shutdown loses what it counted since its last flush.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use crate::db::models::{KeyUsage, UsageRow};
use crate::db::Database;
use crate::domain::{hour_of, ApiKeyId, ChatbotId, ReservationEvent, UsageCounts, UsageEvent};

/// Counts by key and hour, each with the key's chatbot.
type Pending = HashMap<(ApiKeyId, DateTime<Utc>), (ChatbotId, UsageCounts)>;

/// Counts answers until the next [`Self::flush`].
#[derive(Clone, Default)]
pub struct UsageRecorder {
    pending: Arc<Mutex<Pending>>,
}

impl UsageRecorder {
    /// Counts one answer about key `id` of `chatbot`, given at `at`.
    pub fn record(&self, id: ApiKeyId, chatbot: ChatbotId, at: DateTime<Utc>, event: UsageEvent) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .entry((id, hour_of(at)))
            .or_insert_with(|| (chatbot, UsageCounts::default()))
            .1
            .count(event);
    }

    /// Counts what became of a reservation of key `id`, at `at`.
    pub fn record_reservation(
        &self,
        id: ApiKeyId,
        chatbot: ChatbotId,
        at: DateTime<Utc>,
        event: ReservationEvent,
    ) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .entry((id, hour_of(at)))
            .or_insert_with(|| (chatbot, UsageCounts::default()))
            .1
            .count_reservation(event);
    }

    /// Adds everything counted so far to the store; on failure the counts
    /// are put back for the next attempt. Returns the rows written.
    pub async fn flush(&self, db: &Database) -> anyhow::Result<usize> {
        let mut batch: Vec<UsageRow> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending
                .drain()
                .map(|((api_key_id, hour), (chatbot_id, counts))| UsageRow {
                    api_key_id,
                    hour,
                    chatbot_id,
                    counts,
                })
                .collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        // In key order, so replicas flushing the same rows at once lock them
        // in the same order and cannot deadlock.
        batch.sort_unstable_by_key(|row| (row.api_key_id, row.hour));
        let result = async {
            let mut conn = db.conn().await?;
            let batch = &batch;
            let written = conn
                .transaction(|conn| async move { KeyUsage::add(conn, batch).await }.scope_boxed())
                .await?;
            anyhow::Ok(written)
        }
        .await;
        if result.is_err() {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for row in batch {
                pending
                    .entry((row.api_key_id, row.hour))
                    .or_insert_with(|| (row.chatbot_id, UsageCounts::default()))
                    .1
                    .add(&row.counts);
            }
        }
        result
    }
}
