//! Coalesced point reads of chatbots, the path GetChatbot takes when the
//! chatbot is not in its cache ([`super::chatbot_cache`]).
//!
//! Each read on its own costs a pooled connection, a round trip and a
//! PostgreSQL wake-up, and under load those, not the row lookup, are what
//! the machine spends its time on. So reads queue here, and a dispatcher
//! sends the ones that queued up together as a single `WHERE id = ANY($1)`.
//! At most a few batches are at the database at once; while they are, new
//! reads wait for the next batch. At low load a read goes out alone, at once.
//!
//! A read is as fresh as a direct one: it joins only a batch whose statement
//! has not been sent yet, so it sees every write committed before it arrived.
//!
//! A batch is bounded in time like a direct read (pool wait, connect and
//! statement timeouts), so a connection that hangs cannot hold a slot, and
//! with it every later read, for longer; its readers get UNAVAILABLE.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::batch_queue::{fail_all, within, BatchQueue, BatchSettings, Pending};
use super::chatbot_cache::ChatbotCache;
use crate::cache::Lookup;
use crate::db::models::Chatbot;
use crate::db::Database;
use crate::domain::ChatbotId;
use crate::error::AppResult;

/// Reads per statement at most: enough to absorb every caller of a busy
/// server, few enough that one slow batch delays nobody for long.
const MAX_BATCH: usize = 128;

/// The handle handlers read through. Dropping the last one stops the
/// dispatcher.
pub struct ChatbotReads {
    queue: BatchQueue<ChatbotId, Option<Chatbot>>,
    cache: Arc<ChatbotCache>,
    stats: Arc<ReadStats>,
}

/// Reads sent to the database (not answered by the cache) and statements
/// sent for them, so far; their ratio is the mean batch size.
#[derive(Debug, Default)]
pub struct ReadStats {
    reads: AtomicU64,
    batches: AtomicU64,
}

impl ReadStats {
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

type PendingRead = Pending<ChatbotId, Option<Chatbot>>;

impl ChatbotReads {
    /// Starts the dispatcher on the current runtime; `settings.in_flight`
    /// bounds the connections it holds at once. Rows read are kept in
    /// `cache`.
    pub fn start(db: Database, settings: BatchSettings, cache: Arc<ChatbotCache>) -> Self {
        let batch_timeout = settings.timeout;
        let stats = Arc::new(ReadStats::default());
        let counted = stats.clone();
        let queue = BatchQueue::start(MAX_BATCH, &settings, move |reads| {
            counted.batches.fetch_add(1, Ordering::Relaxed);
            let db = db.clone();
            async move { answer(&db, reads, batch_timeout).await }
        });
        Self {
            queue,
            cache,
            stats,
        }
    }

    pub fn stats(&self) -> Arc<ReadStats> {
        self.stats.clone()
    }

    /// The chatbot, if it exists: from the cache, else read (and cached).
    pub async fn find(&self, id: ChatbotId) -> AppResult<Option<Chatbot>> {
        let generation = match self.cache.get(&id) {
            Lookup::Hit(row) => return Ok(Some(Chatbot::clone(&row))),
            Lookup::Miss(generation) => generation,
        };
        let found = self.read(id).await?;
        if let Some(row) = &found {
            self.cache.insert(&id, Arc::new(row.clone()), generation);
        }
        Ok(found)
    }

    async fn read(&self, id: ChatbotId) -> AppResult<Option<Chatbot>> {
        let answer = self.queue.enqueue(id)?;
        // Counted once queued, so a count that includes a read means the
        // dispatcher can see it.
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        // The batch's own queries run in no RPC's trace; this span shows
        // the caller's wait for them.
        answer
            .instrument(tracing::debug_span!("db.coalesced_read"))
            .await
    }
}

/// Runs one batch and hands each reader its row, or each the same error.
async fn answer(db: &Database, reads: Vec<PendingRead>, batch_timeout: Duration) {
    let ids: Arc<[ChatbotId]> = reads.iter().map(|read| read.item).collect();
    distribute(query(db, ids, batch_timeout).await, reads);
}

/// The batch's statement, run in a task of its own so that on timeout it is
/// left to finish rather than dropped half-way: a SQLite statement dropped
/// while its blocking thread still runs leaves its connection shared with
/// that thread (see `sqlite_checkout` in `crate::db`).
async fn query(
    db: &Database,
    ids: Arc<[ChatbotId]>,
    batch_timeout: Duration,
) -> AppResult<Vec<Chatbot>> {
    let db = db.clone();
    let statement = tokio::spawn(async move {
        let mut conn = db.conn().await?;
        Ok(Chatbot::find_many(&mut conn, &ids).await?)
    });
    within(batch_timeout, "a batched chatbot read", statement).await
}

/// Hands each reader its row (or `None`), or each the same error. A reader
/// that gave up (its RPC was cancelled) is skipped.
fn distribute(found: AppResult<Vec<Chatbot>>, reads: Vec<PendingRead>) {
    match found {
        Ok(rows) => {
            // Each row with how many readers still want it: the last one
            // takes it, earlier ones (the same id read twice) get copies.
            let mut rows: HashMap<ChatbotId, (Chatbot, usize)> =
                rows.into_iter().map(|row| (row.id, (row, 0))).collect();
            for read in &reads {
                if let Some((_, wanted)) = rows.get_mut(&read.item) {
                    *wanted += 1;
                }
            }
            for read in reads {
                let row = match rows.get_mut(&read.item) {
                    Some((row, wanted)) if *wanted > 1 => {
                        *wanted -= 1;
                        Some(row.clone())
                    }
                    Some(_) => rows.remove(&read.item).map(|(row, _)| row),
                    None => None,
                };
                read.answer(Ok(row));
            }
        }
        Err(error) => fail_all(reads, &error),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use tokio::sync::oneshot;

    use super::*;
    use crate::domain::UserId;

    fn chatbot(name: &str) -> Chatbot {
        Chatbot {
            id: ChatbotId::generate(),
            owner_id: UserId::generate(),
            name: name.into(),
            llm_endpoint_url: "https://llm.example.com/v1/chat".into(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            organization_id: crate::domain::OrganizationId::generate(),
        }
    }

    fn read(id: ChatbotId) -> (PendingRead, oneshot::Receiver<AppResult<Option<Chatbot>>>) {
        Pending::new(id)
    }

    #[test]
    fn every_live_reader_of_a_batch_gets_its_own_row_when_others_were_cancelled_mid_batch() {
        let a = chatbot("a");
        let b = chatbot("b");
        let missing = ChatbotId::generate();
        // In batch order: the first and the last reader of `a` and the
        // only reader of `b` give up after the batch was sent.
        let ids = [a.id, a.id, b.id, a.id, missing, b.id, a.id];
        let cancelled = [0, 2, 6];
        let (reads, mut answers): (Vec<_>, Vec<_>) = ids.iter().map(|id| read(*id)).unzip();
        for index in cancelled {
            answers[index].close();
        }
        distribute(Ok(vec![a.clone(), b.clone()]), reads);
        for (index, (id, mut answer)) in ids.iter().zip(answers).enumerate() {
            if cancelled.contains(&index) {
                continue;
            }
            let row = answer
                .try_recv()
                .expect("a live reader is answered")
                .expect("no error");
            let expected = [&a, &b].into_iter().find(|row| row.id == *id);
            assert_eq!(
                row.map(|row| (row.id, row.name)),
                expected.map(|row| (row.id, row.name.clone())),
                "reader {index}"
            );
        }
    }
}
