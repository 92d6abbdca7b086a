//! What the locked path reads under its locks: the reservations a batch
//! finishes, and the keys that went away under an organization's spends.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::{Finish, Spend};
use crate::db::models::{ApiKey, KeyLimits, Reservation, ReservationFinish};
use crate::db::DbConnection;
use crate::domain::ApiKeyId;
use crate::error::AppResult;

/// Finishes the open, unexpired reservations among `finishes` (each at
/// most once, the first of a batch that names it), locking them until the
/// transaction ends: each as finished, or none.
pub(super) async fn finish_open(
    conn: &mut DbConnection,
    finishes: &[Finish],
    now: DateTime<Utc>,
) -> AppResult<Vec<Option<Reservation>>> {
    let mut seen = HashSet::new();
    let firsts: Vec<ReservationFinish> = finishes
        .iter()
        .filter(|finish| seen.insert(finish.token_hash))
        .map(|finish| ReservationFinish {
            token_hash: finish.token_hash,
            state: finish.state,
            charged: finish.charged,
        })
        .collect();
    let mut finished: HashMap<[u8; 32], Reservation> = Reservation::finish_many(conn, &firsts, now)
        .await?
        .into_iter()
        .collect();
    Ok(finishes
        .iter()
        .map(|finish| finished.remove(&finish.token_hash))
        .collect())
}

/// The keys of reservations from an organization's balance that no longer
/// exist (deleted since they were looked up), whose reservations must not
/// be recorded; the others are locked against deletion (FOR KEY SHARE)
/// until the transaction ends. A key with a limits row (locked already)
/// needs no look.
pub(super) async fn gone_keys(
    conn: &mut DbConnection,
    spends: &[Spend],
    rows: &[KeyLimits],
) -> AppResult<HashSet<ApiKeyId>> {
    let with_row: HashSet<ApiKeyId> = rows.iter().map(|row| row.api_key_id).collect();
    let mut ids: Vec<ApiKeyId> = spends
        .iter()
        .filter(|spend| spend.hold.is_some() && spend.organization.is_some())
        .map(|spend| spend.id)
        .filter(|id| !with_row.contains(id))
        .collect();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    ids.sort_unstable();
    ids.dedup();
    let existing: HashSet<ApiKeyId> = ApiKey::lock_existing(conn, &ids)
        .await?
        .into_iter()
        .collect();
    Ok(ids
        .into_iter()
        .filter(|id| !existing.contains(id))
        .collect())
}
