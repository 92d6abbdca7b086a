//! Batched credit spends, the path VerifyApiKey takes for keys with credits.
//!
//! One spend on its own is a transaction: a pooled connection, a round trip
//! and a commit (a WAL flush) each. Spends therefore queue here, like
//! GetChatbot's reads (`read_coalescing`), and a dispatcher settles the ones
//! that queued up together: it applies due refills and then every spend in
//! arrival order to the keys' rows in memory, writes the new balances in one
//! statement, and only then answers. So:
//!
//! - a balance never goes below zero, whatever the concurrency and however
//!   many replicas: a balance is written only over the row it was computed
//!   from (compare-and-set), and a row that changed meanwhile is read again
//!   and its spends settled again;
//! - a spend answered VALID is committed: a crash loses none;
//! - refills happen on time without a job per key: a batch applies any that
//!   fell due before it spends.
//!
//! The rows come from what this process last read or wrote, so on
//! PostgreSQL a batch is usually one statement: one round trip and one
//! commit, with no transaction held open across round trips. Only a spend
//! that succeeds is answered from a remembered row; a refusal is always
//! decided on the row as read now, so a top-up elsewhere is seen at once.
//! After a few rounds of conflicts (many replicas spending one key) the rest
//! of a batch is settled in a transaction that locks its rows in id order,
//! which is also the only path on SQLite (one writer at a time there).
//!
//! A reservation (VerifyApiKey with `reserve`) is a spend that also
//! records what it held, and its settlement or release a change to the
//! balance it came from. Both take the locked path, in the same batches as
//! the spends: the reservations finished by a batch are locked first, then
//! the balances (in id order), and the reservations made, finished and the
//! balances written commit together. So an answered reservation or
//! settlement is never lost, never applied twice, and a batch of them costs
//! one transaction rather than one each.
//!
//! A key whose organization has credits spends from both balances or from
//! neither: such spends take the locked path too, which locks the keys'
//! rows and then the organizations' (each in id order, so two batches on
//! any replicas lock in one order), judges each spend against both, and
//! writes both. Several keys of one organization in a batch share one lock
//! and one write of its row. A reservation records the organization it
//! held on, and its settlement or release gives back there as well.
//!
//! At low load a spend goes out alone, at once. A batch is bounded in time
//! like a direct query; on timeout or a database error its callers get the
//! error (UNAVAILABLE when the store is unreachable), and nothing was spent
//! unless it committed.

mod locked_reads;
mod settlement;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;
use tracing::Instrument;

use super::batch_queue::{fail_all, within, BatchQueue, BatchSettings, Pending};
use crate::db::models::{
    Balance, KeyLimits, NewReservation, OrganizationLimits, Reservation, ReservationState,
};
use crate::db::{Database, DbConnection};
use crate::domain::{ApiKeyId, ChatbotId, LimitScope, OrganizationId};
use crate::error::{AppError, AppResult};
use locked_reads::{finish_open, gone_keys};
use settlement::{settle, Account, Ask, Refund, Settled};

/// Spends per batch at most.
const MAX_BATCH: usize = 256;

/// Compare-and-set rounds a batch tries before it locks its rows.
const OPTIMISTIC_ROUNDS: usize = 3;

/// Rows remembered at most; past it the memory starts again empty (a
/// forgotten row costs one read).
const MAX_REMEMBERED: usize = 100_000;

/// What a spend came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendOutcome {
    /// Spent; the balances after: the key's and the organization's, each
    /// `None` where there is none.
    Spent {
        key: Option<i64>,
        organization: Option<i64>,
    },
    /// A balance does not cover the cost (the key's, judged first, or the
    /// organization's): nothing was spent from either.
    Short {
        remaining: i64,
        next_refill: Option<DateTime<Utc>>,
        scope: LimitScope,
    },
    /// Neither the key nor its organization has credits (any more):
    /// nothing to spend.
    Unlimited,
    /// The key is gone (deleted since the caller looked it up).
    KeyGone,
}

/// What a reservation records besides its spend.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    /// SHA-256 of the reservation's id.
    pub token_hash: [u8; 32],
    pub chatbot_id: ChatbotId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One spend asked for: `cost` from key `id` and, when it has credits,
/// from its `organization`'s balance too, held as a reservation if `hold`
/// says so.
#[derive(Debug, Clone, Copy)]
struct Spend {
    id: ApiKeyId,
    organization: Option<OrganizationId>,
    cost: i64,
    hold: Option<Hold>,
}

impl Spend {
    /// The reservation this spend records, given what it came to.
    fn reservation(&self, outcome: SpendOutcome) -> Option<NewReservation> {
        let (from_balance, organization) = match outcome {
            SpendOutcome::Spent { key, organization } => {
                (key.is_some(), organization.and(self.organization))
            }
            SpendOutcome::Unlimited => (false, None),
            SpendOutcome::Short { .. } | SpendOutcome::KeyGone => return None,
        };
        self.hold.map(|hold| {
            NewReservation::new(
                hold.token_hash,
                self.id,
                hold.chatbot_id,
                self.cost,
                from_balance,
                hold.created_at,
                hold.expires_at,
            )
            .held_by_organization(organization)
        })
    }

    fn ask(&self) -> Ask {
        Ask {
            id: self.id,
            organization: self.organization,
            cost: self.cost,
        }
    }
}

/// A reservation to finish: settled at `charged`, or released (0).
#[derive(Debug, Clone, Copy)]
pub struct Finish {
    /// SHA-256 of the reservation's id.
    pub token_hash: [u8; 32],
    pub state: ReservationState,
    pub charged: i64,
}

/// One change a batch makes.
#[derive(Debug, Clone, Copy)]
enum Change {
    Spend(Spend),
    Finish(Finish),
}

/// What a change came to.
#[derive(Debug, Clone)]
enum Changed {
    Spend(SpendOutcome),
    /// The reservation as this batch finished it; none if it was not open
    /// and unexpired (or another change of the batch finished it).
    Finish(Option<Reservation>),
}

/// The handle VerifyApiKey spends through, and reservations are finished
/// through.
pub struct CreditSpends {
    queue: BatchQueue<Change, Changed>,
}

impl CreditSpends {
    /// Starts the dispatcher on the current runtime; `settings.in_flight`
    /// bounds the connections it holds at once.
    pub fn start(db: Database, settings: BatchSettings) -> Self {
        let settler = Arc::new(Settler {
            db,
            batch_timeout: settings.timeout,
            rows: Mutex::default(),
        });
        let queue = BatchQueue::start(MAX_BATCH, &settings, move |spends| {
            let settler = settler.clone();
            async move { settler.settle_batch(spends).await }
        });
        Self { queue }
    }

    /// Spends `cost` from key `id`'s balance and, if given, its
    /// organization's, if both cover it.
    pub async fn spend(
        &self,
        id: ApiKeyId,
        organization: Option<OrganizationId>,
        cost: i64,
    ) -> AppResult<SpendOutcome> {
        // The batch's own queries run in no RPC's trace; this span shows
        // the caller's wait for them.
        let spend = Change::Spend(Spend {
            id,
            organization,
            cost,
            hold: None,
        });
        let changed = self
            .queue
            .enqueue(spend)?
            .instrument(tracing::debug_span!("db.credit_spend"))
            .await?;
        Ok(spend_outcome(changed))
    }

    /// Finishes an open, unexpired reservation as `finish` says, giving
    /// back to its balance what was reserved beyond the charge (or taking
    /// the excess): the reservation as finished, or none if it was not
    /// open and unexpired.
    pub async fn finish(&self, finish: Finish) -> AppResult<Option<Reservation>> {
        let changed = self
            .queue
            .enqueue(Change::Finish(finish))?
            .instrument(tracing::debug_span!("db.credit_settle"))
            .await?;
        Ok(match changed {
            Changed::Finish(reservation) => reservation,
            Changed::Spend(_) => None,
        })
    }

    /// Takes `cost` from key `id`'s balance and, if given, its
    /// organization's, if both cover it, and records it as the reservation
    /// `hold` in the same transaction. A key whose credits were removed
    /// meanwhile (`Unlimited`) gets its reservation too, holding nothing.
    pub async fn reserve(
        &self,
        id: ApiKeyId,
        organization: Option<OrganizationId>,
        cost: i64,
        hold: Hold,
    ) -> AppResult<SpendOutcome> {
        let changed = self
            .queue
            .enqueue(Change::Spend(Spend {
                id,
                organization,
                cost,
                hold: Some(hold),
            }))?
            .instrument(tracing::debug_span!("db.credit_reserve"))
            .await?;
        Ok(spend_outcome(changed))
    }
}

/// A spend's answer (a batch answers each change in kind).
fn spend_outcome(changed: Changed) -> SpendOutcome {
    match changed {
        Changed::Spend(outcome) => outcome,
        Changed::Finish(_) => SpendOutcome::KeyGone,
    }
}

struct Settler {
    db: Database,
    batch_timeout: Duration,
    /// Each key's row as this process last read or wrote it.
    rows: Mutex<HashMap<ApiKeyId, KeyLimits>>,
}

impl Settler {
    /// Settles one batch and answers each spend, or each the same error.
    async fn settle_batch(self: Arc<Self>, spends: Vec<Pending<Change, Changed>>) {
        let asked: Vec<Change> = spends.iter().map(|spend| spend.item).collect();
        match self.run(asked).await {
            Ok(outcomes) => {
                for (spend, outcome) in spends.into_iter().zip(outcomes) {
                    spend.answer(Ok(outcome));
                }
            }
            Err(error) => fail_all(spends, &error),
        }
    }

    /// The batch's work, in a task of its own so that on timeout it is left
    /// to finish (and commit or roll back) rather than dropped half-way.
    async fn run(self: Arc<Self>, changes: Vec<Change>) -> AppResult<Vec<Changed>> {
        let batch_timeout = self.batch_timeout;
        let work = tokio::spawn(async move {
            let mut conn = self.db.conn().await?;
            let mut outcomes: Vec<Option<SpendOutcome>> = vec![None; changes.len()];
            // Plain spends first try compare-and-set; reservations,
            // finishes and spends from an organization's balance take the
            // locked path, which writes them in the transaction that writes
            // their balances (both balances, for an organization's).
            let mut spends = Vec::new();
            let mut plain = Vec::new();
            let mut held = Vec::new();
            let mut finishes = Vec::new();
            for (i, change) in changes.iter().enumerate() {
                match change {
                    Change::Spend(spend) => {
                        match spend.hold.is_some() || spend.organization.is_some() {
                            true => held.push(i),
                            false => plain.push(i),
                        }
                        spends.push((i, *spend));
                    }
                    Change::Finish(finish) => finishes.push((i, *finish)),
                }
            }
            let spend_at: HashMap<usize, Spend> = spends.into_iter().collect();
            let mut open = if matches!(conn, DbConnection::Postgres(_)) {
                self.settle_optimistically(&mut conn, &spend_at, plain, &mut outcomes)
                    .await?
            } else {
                plain
            };
            open.extend(held);
            let mut finished: Vec<Option<Reservation>> = vec![None; changes.len()];
            if !open.is_empty() || !finishes.is_empty() {
                let open_spends: Vec<Spend> = open.iter().map(|&i| spend_at[&i]).collect();
                let only_finishes: Vec<Finish> = finishes.iter().map(|(_, f)| *f).collect();
                let (settled, done) = self
                    .settle_locked(&mut conn, open_spends, only_finishes)
                    .await?;
                for (i, outcome) in open.into_iter().zip(settled) {
                    outcomes[i] = Some(outcome);
                }
                for ((i, _), reservation) in finishes.into_iter().zip(done) {
                    finished[i] = reservation;
                }
            }
            let answers = changes
                .iter()
                .enumerate()
                .map(|(i, change)| match change {
                    Change::Spend(_) => {
                        Changed::Spend(outcomes[i].unwrap_or(SpendOutcome::KeyGone))
                    }
                    Change::Finish(_) => Changed::Finish(finished[i].take()),
                })
                .collect();
            Ok::<_, AppError>(answers)
        });
        within(batch_timeout, "a batch of credit spends", work).await
    }

    /// Settles what it can of `spends` with compare-and-set writes, filling
    /// `outcomes`; returns the indices of the spends still open.
    async fn settle_optimistically(
        &self,
        conn: &mut DbConnection,
        spends: &HashMap<usize, Spend>,
        mut open: Vec<usize>,
        outcomes: &mut [Option<SpendOutcome>],
    ) -> AppResult<Vec<usize>> {
        for round in 0..OPTIMISTIC_ROUNDS {
            if open.is_empty() {
                break;
            }
            let asked: Vec<Ask> = open.iter().map(|i| spends[i].ask()).collect();
            let mut ids: Vec<ApiKeyId> = asked.iter().map(|ask| ask.id).collect();
            ids.sort_unstable();
            ids.dedup();
            // The first round starts from remembered rows; later rounds and
            // keys not remembered read the rows as they are now.
            let mut rows = Vec::with_capacity(ids.len());
            let mut unread = Vec::new();
            if round == 0 {
                let remembered = self.remembered();
                for id in ids {
                    match remembered.get(&id) {
                        Some(row) => rows.push(*row),
                        None => unread.push(id),
                    }
                }
            } else {
                unread = ids;
            }
            let read_now: HashSet<ApiKeyId> = unread.iter().copied().collect();
            if !unread.is_empty() {
                let read = KeyLimits::find_many(conn, &unread).await?;
                self.remember(&unread, &read);
                rows.extend(read);
            }
            let Settled {
                outcomes: settled,
                keys: balances,
                ..
            } = settle(&rows, &[], &[], &HashSet::new(), &asked, Utc::now());
            let written: HashSet<ApiKeyId> = match KeyLimits::write_balances(conn, &balances).await
            {
                Ok(written) => written.into_iter().collect(),
                // PostgreSQL refused the statement (a deadlock, say): it
                // rolled back whole, so the locked path settles the rest.
                Err(diesel::result::Error::DatabaseError(..)) => return Ok(open),
                Err(error) => return Err(error.into()),
            };
            let conflicted = self.remember_written(&balances, &written);
            let mut still_open = Vec::new();
            for (&i, outcome) in open.iter().zip(settled) {
                let id = spends[&i].id;
                let decided = match outcome {
                    SpendOutcome::Spent { .. } => true,
                    _ => read_now.contains(&id),
                };
                if decided && !conflicted.contains(&id) {
                    outcomes[i] = Some(outcome);
                } else {
                    still_open.push(i);
                }
            }
            open = still_open;
        }
        Ok(open)
    }

    /// Settles `spends` and finishes `finishes` in one transaction: the
    /// reservations finished are locked first, then every key's balance
    /// touched (in id order), then every organization's (in id order): the
    /// same order on every replica, so no deadlock.
    async fn settle_locked(
        &self,
        conn: &mut DbConnection,
        spends: Vec<Spend>,
        finishes: Vec<Finish>,
    ) -> AppResult<(Vec<SpendOutcome>, Vec<Option<Reservation>>)> {
        let asked: Vec<Ask> = spends.iter().map(Spend::ask).collect();
        let (outcomes, finished, balances) = conn
            .transaction(|conn| {
                async move {
                    // As the store keeps it (microseconds): a repeated
                    // settlement reads back what this one answers.
                    let now = Utc::now().trunc_subsecs(6);
                    let finished = finish_open(conn, &finishes, now).await?;
                    let refunds: Vec<Refund> =
                        finished.iter().flatten().flat_map(Refund::of).collect();
                    let mut ids: Vec<ApiKeyId> = spends.iter().map(|spend| spend.id).collect();
                    let mut organizations: Vec<OrganizationId> = spends
                        .iter()
                        .filter_map(|spend| spend.organization)
                        .collect();
                    for refund in &refunds {
                        match refund.account {
                            Account::Key(id) => ids.push(id),
                            Account::Organization(id) => organizations.push(id),
                        }
                    }
                    ids.sort_unstable();
                    ids.dedup();
                    organizations.sort_unstable();
                    organizations.dedup();
                    let rows = KeyLimits::lock_many(conn, &ids).await?;
                    let organization_rows =
                        OrganizationLimits::lock_many(conn, &organizations).await?;
                    let gone = gone_keys(conn, &spends, &rows).await?;
                    let settled = settle(&rows, &organization_rows, &refunds, &gone, &asked, now);
                    let written = KeyLimits::write_balances(conn, &settled.keys).await?;
                    if written.len() != settled.keys.len() {
                        return Err(AppError::internal(anyhow::anyhow!(
                            "a locked credit row changed under its lock"
                        )));
                    }
                    OrganizationLimits::write_balances(conn, &settled.organizations).await?;
                    let reservations: Vec<NewReservation> = spends
                        .iter()
                        .zip(&settled.outcomes)
                        .filter_map(|(spend, outcome)| spend.reservation(*outcome))
                        .collect();
                    Reservation::insert_many(conn, &reservations).await?;
                    Ok::<_, AppError>((settled.outcomes, finished, settled.keys))
                }
                .scope_boxed()
            })
            .await?;
        let written: HashSet<ApiKeyId> = balances.iter().map(|balance| balance.id).collect();
        self.remember_written(&balances, &written);
        Ok((outcomes, finished))
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<ApiKeyId, KeyLimits>> {
        // A panic elsewhere cannot leave a row half-written: plain values.
        self.rows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers the rows read for `ids` (a key with no row, or no credits
    /// any more, is forgotten).
    fn remember(&self, ids: &[ApiKeyId], read: &[KeyLimits]) {
        let mut rows = self.remembered();
        if rows.len() + read.len() > MAX_REMEMBERED {
            rows.clear();
        }
        for id in ids {
            rows.remove(id);
        }
        for row in read.iter().filter(|row| row.credits().is_some()) {
            rows.insert(row.api_key_id, *row);
        }
    }

    /// Remembers the balances `written`, forgets the rows whose write found
    /// them changed, and returns those keys.
    fn remember_written(
        &self,
        balances: &[Balance],
        written: &HashSet<ApiKeyId>,
    ) -> HashSet<ApiKeyId> {
        let mut rows = self.remembered();
        let mut conflicted = HashSet::new();
        for balance in balances {
            if written.contains(&balance.id) {
                rows.insert(balance.id, balance.was.with_balance(balance));
            } else {
                rows.remove(&balance.id);
                conflicted.insert(balance.id);
            }
        }
        conflicted
    }
}
