//! The queue GetChatbot's reads and VerifyApiKey's credit spends share:
//! callers queue items, and a dispatcher sends the ones that queued up
//! together as one batch. At most `in_flight` batches run at once; while
//! they do, new items wait for the next batch. At low load an item goes out
//! alone, at once. An item whose caller went away before its batch was
//! sent is dropped (nobody waits for its answer). The queue is bounded
//! ([`QueueBound`]): when the database falls behind, a call beyond the bound
//! is refused at once (RESOURCE_EXHAUSTED with a retry time) rather than
//! queued without limit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::db::PoolSettings;
use crate::error::{AppError, AppResult};

/// One queued item and where its answer goes.
pub struct Pending<Q, A> {
    pub item: Q,
    reply: oneshot::Sender<AppResult<A>>,
}

impl<Q, A> Pending<Q, A> {
    /// A pending item and the receiver of its answer (for tests).
    pub fn new(item: Q) -> (Self, oneshot::Receiver<AppResult<A>>) {
        let (reply, answer) = oneshot::channel();
        (Self { item, reply }, answer)
    }

    /// Whether the caller still waits for the answer.
    pub fn is_wanted(&self) -> bool {
        !self.reply.is_closed()
    }

    pub fn answer(self, answer: AppResult<A>) {
        // A caller that went away needs no answer.
        let _ = self.reply.send(answer);
    }
}

/// What a refused call is told to wait: a full queue drains in a few
/// batches' time.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How many items may wait, and where refusals are counted.
#[derive(Clone)]
pub struct QueueBound {
    pub max_queued: usize,
    pub refusals: Counter,
}

/// How a batch queue runs: how many batches may be at the database at
/// once, how many items may wait, and how long a batch may take.
#[derive(Clone)]
pub struct BatchSettings {
    pub in_flight: usize,
    pub bound: QueueBound,
    pub timeout: Duration,
}

impl BatchSettings {
    /// `in_flight` batches at once and `bound` waiting, each batch given
    /// [`batch_timeout`] of `pool`.
    pub fn new(in_flight: usize, bound: QueueBound, pool: &PoolSettings) -> Self {
        Self {
            in_flight,
            bound,
            timeout: batch_timeout(pool),
        }
    }
}

/// The handle callers queue through. Dropping it stops the dispatcher.
pub struct BatchQueue<Q, A> {
    queue: mpsc::Sender<Pending<Q, A>>,
    refusals: Counter,
}

impl<Q: Send + 'static, A: Send + 'static> BatchQueue<Q, A> {
    /// Starts the dispatcher on the current runtime: `run` gets each batch
    /// (of at most `max_batch` items) and answers every item in it.
    pub fn start<F, Fut>(max_batch: usize, settings: &BatchSettings, run: F) -> Self
    where
        F: Fn(Vec<Pending<Q, A>>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (queue, pending) = mpsc::channel(settings.bound.max_queued.max(1));
        tokio::spawn(dispatch(pending, max_batch, settings.in_flight.max(1), run));
        Self {
            queue,
            refusals: settings.bound.refusals.clone(),
        }
    }

    /// Queues `item`; the returned future is its answer.
    pub fn enqueue(&self, item: Q) -> AppResult<impl Future<Output = AppResult<A>>> {
        let (pending, answer) = Pending::new(item);
        match self.queue.try_send(pending) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.refusals.inc();
                return Err(AppError::ResourceExhausted {
                    message: "the server is overloaded; retry later".into(),
                    retry_after: FULL_RETRY_AFTER,
                });
            }
            Err(TrySendError::Closed(_)) => {
                return Err(AppError::internal(anyhow::anyhow!(
                    "a batch dispatcher has stopped"
                )))
            }
        }
        Ok(async move {
            answer.await.unwrap_or_else(|_| {
                Err(AppError::internal(anyhow::anyhow!(
                    "a batched item ended without an answer"
                )))
            })
        })
    }
}

async fn dispatch<Q, A, F, Fut>(
    mut pending: mpsc::Receiver<Pending<Q, A>>,
    max_batch: usize,
    in_flight: usize,
    run: F,
) where
    Q: Send + 'static,
    A: Send + 'static,
    F: Fn(Vec<Pending<Q, A>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight));
    let mut batch = Vec::with_capacity(max_batch);
    while pending.recv_many(&mut batch, max_batch).await > 0 {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Items that arrived while every slot was busy go out together.
        while batch.len() < max_batch {
            match pending.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        batch.retain(Pending::is_wanted);
        if batch.is_empty() {
            continue;
        }
        let items = std::mem::replace(&mut batch, Vec::with_capacity(max_batch));
        let running = run(items);
        tokio::spawn(async move {
            running.await;
            drop(slot);
        });
    }
}

/// How long a batch may take: what one direct query could wait for under
/// `pool` (a pooled connection, a new connection, its statement), plus a
/// second of slack. Past it, the batch's callers get UNAVAILABLE.
fn batch_timeout(pool: &PoolSettings) -> Duration {
    pool.acquire_timeout + pool.connect_timeout + pool.statement_timeout + Duration::from_secs(1)
}

/// Waits at most `limit` for a batch's `work` (a spawned task, so that on
/// timeout the work is abandoned, not its callers: they get UNAVAILABLE now
/// rather than whenever the database answers). A task that failed is
/// INTERNAL; `what` names the batch in either error.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    work: tokio::task::JoinHandle<AppResult<T>>,
) -> AppResult<T> {
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(failed)) => Err(AppError::internal(anyhow::anyhow!(
            "{what} failed: {failed}"
        ))),
        Err(_) => Err(AppError::Unavailable(anyhow::anyhow!(
            "{what} took longer than {limit:?}"
        ))),
    }
}

/// Answers every item of a failed batch with the same error.
pub fn fail_all<Q, A>(items: Vec<Pending<Q, A>>, error: &AppError) {
    for item in items {
        item.answer(Err(error.duplicate()));
    }
}
