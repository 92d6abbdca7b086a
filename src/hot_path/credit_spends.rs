//! Batched credit spends, the path VerifyApiKey takes for keys with credits.
//!
//! One spend on its own is a transaction: a pooled connection, a round trip
//! and a commit (a WAL flush) each. Spends therefore queue here, like
//! GetChatbot's reads (`read_coalescing`), and a dispatcher settles the ones
//! that queued up together in one transaction: lock their rows (in id
//! order, so batches on different replicas cannot deadlock), apply due
//! refills and then every spend in arrival order in memory, write the new
//! balances in one statement, commit, and only then answer. So:
//!
//! - a balance never goes below zero, whatever the concurrency and however
//!   many replicas: every batch works on locked, current rows;
//! - a spend answered VALID is committed: a crash loses none;
//! - refills happen on time without a job per key: a batch applies any that
//!   fell due before it spends.
//!
//! At low load a spend goes out alone, at once. A batch is bounded in time
//! like a direct query; on timeout or a database error its callers get the
//! error (UNAVAILABLE when the store is unreachable), and nothing was spent
//! unless it committed.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::batch_queue::{batch_timeout, fail_all, BatchQueue, Pending};
use crate::db::models::{Balance, KeyLimits};
use crate::db::{Database, PoolSettings};
use crate::domain::ApiKeyId;
use crate::error::{AppError, AppResult};

/// Spends per transaction at most.
const MAX_BATCH: usize = 256;

/// What a spend came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendOutcome {
    /// Spent; the balance after.
    Spent(i64),
    /// The balance does not cover the cost: nothing was spent.
    Short {
        remaining: i64,
        next_refill: Option<DateTime<Utc>>,
    },
    /// The key has no credits (any more): nothing to spend.
    Unlimited,
    /// The key is gone (deleted since the caller looked it up).
    KeyGone,
}

/// The handle VerifyApiKey spends through.
pub struct CreditSpends {
    queue: BatchQueue<(ApiKeyId, i64), SpendOutcome>,
}

impl CreditSpends {
    /// Starts the dispatcher on the current runtime; `batches_in_flight`
    /// bounds the connections it holds at once.
    pub fn start(db: Database, batches_in_flight: usize, pool: &PoolSettings) -> Self {
        let batch_timeout = batch_timeout(pool);
        let queue = BatchQueue::start(MAX_BATCH, batches_in_flight, move |spends| {
            let db = db.clone();
            async move { settle_batch(&db, spends, batch_timeout).await }
        });
        Self { queue }
    }

    /// Spends `cost` from key `id`'s balance, if it covers it.
    pub async fn spend(&self, id: ApiKeyId, cost: i64) -> AppResult<SpendOutcome> {
        self.queue.enqueue((id, cost))?.await
    }
}

/// Settles one batch and answers each spend, or each the same error.
async fn settle_batch(
    db: &Database,
    spends: Vec<Pending<(ApiKeyId, i64), SpendOutcome>>,
    batch_timeout: Duration,
) {
    let asked: Vec<(ApiKeyId, i64)> = spends.iter().map(|spend| spend.item).collect();
    match run(db, asked, batch_timeout).await {
        Ok(outcomes) => {
            for (spend, outcome) in spends.into_iter().zip(outcomes) {
                spend.answer(Ok(outcome));
            }
        }
        Err(error) => fail_all(spends, &error),
    }
}

/// The batch's transaction, in a task of its own so that on timeout it is
/// left to finish (and commit or roll back) rather than dropped half-way.
async fn run(
    db: &Database,
    spends: Vec<(ApiKeyId, i64)>,
    batch_timeout: Duration,
) -> AppResult<Vec<SpendOutcome>> {
    let db = db.clone();
    let transaction = tokio::spawn(async move {
        let mut ids: Vec<ApiKeyId> = spends.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut conn = db.conn().await?;
        conn.transaction(|conn| {
            async move {
                let rows = KeyLimits::lock_many(conn, &ids).await?;
                let (outcomes, balances) = settle(&rows, &spends, Utc::now());
                KeyLimits::write_balances(conn, &balances).await?;
                Ok::<_, AppError>(outcomes)
            }
            .scope_boxed()
        })
        .await
    });
    match tokio::time::timeout(batch_timeout, transaction).await {
        Ok(Ok(outcomes)) => outcomes,
        Ok(Err(failed)) => Err(AppError::internal(anyhow::anyhow!(
            "a batch of credit spends failed: {failed}"
        ))),
        Err(_) => Err(AppError::Unavailable(anyhow::anyhow!(
            "a batch of credit spends took longer than {batch_timeout:?}"
        ))),
    }
}

/// Applies `spends` in order to the locked `rows` as of `now`: each spend's
/// outcome, and the balances to write (a due refill first resets a balance).
fn settle(
    rows: &[KeyLimits],
    spends: &[(ApiKeyId, i64)],
    now: DateTime<Utc>,
) -> (Vec<SpendOutcome>, Vec<Balance>) {
    struct Account {
        remaining: i64,
        next_refill: Option<DateTime<Utc>>,
        refilled_at: Option<DateTime<Utc>>,
        changed: bool,
    }
    let mut accounts: HashMap<ApiKeyId, Account> = rows
        .iter()
        .filter_map(|row| {
            let credits = row.credits()?;
            let (remaining, next_refill) = credits.as_of(now);
            let refilled_at = credits.refill.and_then(|(refill, last)| {
                Some(refill.latest_boundary(last, now)).filter(|boundary| *boundary > last)
            });
            Some((
                row.api_key_id,
                Account {
                    remaining,
                    next_refill,
                    refilled_at,
                    changed: refilled_at.is_some(),
                },
            ))
        })
        .collect();
    let outcomes = spends
        .iter()
        .map(|(id, cost)| match accounts.get_mut(id) {
            // A key that was looked up with credits has a row until it is
            // deleted (the row goes by cascade).
            None if !rows.iter().any(|row| row.api_key_id == *id) => SpendOutcome::KeyGone,
            None => SpendOutcome::Unlimited,
            Some(account) if account.remaining >= *cost => {
                account.remaining -= cost;
                account.changed = true;
                SpendOutcome::Spent(account.remaining)
            }
            Some(account) => SpendOutcome::Short {
                remaining: account.remaining,
                next_refill: account.next_refill,
            },
        })
        .collect();
    let mut balances: Vec<Balance> = accounts
        .into_iter()
        .filter(|(_, account)| account.changed)
        .map(|(id, account)| Balance {
            id,
            remaining: account.remaining,
            refilled_at: account.refilled_at,
        })
        .collect();
    balances.sort_unstable_by_key(|balance| balance.id);
    (outcomes, balances)
}
