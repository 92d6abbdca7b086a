//! Key lifecycle events: what happens to a key or an organization without
//! anyone changing it. A key whose expiry comes within
//! KEY_EXPIRY_NOTICE_HOURS gets `api_key.expiring`; a balance that falls to
//! its owner's low threshold gets `api_key.credits_low` (an organization's,
//! `organization.credits_low`), and one that runs out `*.credits_exhausted`.
//!
//! Every replica sweeps every LIFECYCLE_EVENTS_INTERVAL_SECS, off any
//! request's path: the spend path stays as it was. Each notice flips its
//! row's column and records its event (audit record and outbox) in one
//! transaction under the row's lock, so a notice is sent once however many
//! replicas sweep, and never lost to a crash between the two. The credit
//! notices clear when the balance rises again (a refill, a top-up), so the
//! next fall is told too; a balance that falls and recovers between two
//! sweeps is not told.

use chrono::{DateTime, TimeDelta, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::events::state_of;
use crate::db::models::lifecycle_notices::{self, CreditNoticeRow};
use crate::db::models::{ApiKey, AuditActor, KeyWithLimits, Organization, OrganizationWithLimits};
use crate::db::{Database, Written};
use crate::domain::{
    ApiKeyId, AuditAction, AuditChange, AuditRecord, AuditTarget, CreditNotices, OrganizationId,
};
use crate::error::AppResult;

/// Keys noticed per transaction.
const EXPIRY_BATCH: i64 = 100;

/// Balances looked at per query.
const CANDIDATE_PAGE: i64 = 1000;

/// Who the audit log says recorded these events.
fn actor() -> AuditActor {
    AuditActor {
        command: Some("key lifecycle".into()),
        ..AuditActor::default()
    }
}

/// One sweep: records every lifecycle event due as of now. Returns how
/// many it recorded.
pub async fn record_due(db: &Database, expiry_notice: TimeDelta) -> AppResult<usize> {
    let now = Utc::now();
    let mut recorded = 0;
    if expiry_notice > TimeDelta::zero() {
        recorded += notice_expiring_keys(db, now, now + expiry_notice).await?;
    }
    recorded += notice_key_credits(db, now).await?;
    recorded += notice_organization_credits(db, now).await?;
    Ok(recorded)
}

async fn notice_expiring_keys(
    db: &Database,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> AppResult<usize> {
    let mut total = 0;
    loop {
        let mut conn = db.conn().await?;
        let noticed = crate::db::write(&mut conn, actor(), None, |conn| {
            async move {
                let ids =
                    lifecycle_notices::keys_expiring_unnoticed(conn, now, until, EXPIRY_BATCH)
                        .await?;
                let mut records = Vec::with_capacity(ids.len());
                for id in &ids {
                    lifecycle_notices::mark_expiry_noticed(conn, *id).await?;
                    if let Some(record) = key_record(conn, *id, AuditAction::ApiKeyExpiring).await?
                    {
                        records.push(record);
                    }
                }
                let found = ids.len();
                Ok::<_, diesel::result::Error>(Written::recorded_all(found, records))
            }
            .scope_boxed()
        })
        .await?;
        total += noticed;
        if (noticed as i64) < EXPIRY_BATCH {
            return Ok(total);
        }
    }
}

/// The event of `action` on a key, with the key as it is now; `None` if it
/// went meanwhile.
async fn key_record(
    conn: &mut crate::db::DbConnection,
    id: ApiKeyId,
    action: AuditAction,
) -> diesel::QueryResult<Option<AuditRecord>> {
    let Some((key, organization, owner)) = ApiKey::find_with_organization(conn, id).await? else {
        return Ok(None);
    };
    let changes = match (action, key.expires_at) {
        (AuditAction::ApiKeyExpiring, Some(expires_at)) => {
            vec![new_value("expire_time", expires_at.to_rfc3339())]
        }
        _ => Vec::new(),
    };
    let key = KeyWithLimits::load(conn, key).await?;
    let balance = credits_change(key.limits.and_then(|limits| limits.credits()));
    Ok(Some(
        AuditRecord::new(action, AuditTarget::api_key(id, owner, organization))
            .with_changes(changes.into_iter().chain(balance).collect())
            .with_state(state_of(key)),
    ))
}

/// The balance now, as a change's `credits.remaining`.
fn credits_change(credits: Option<crate::domain::CreditsState>) -> Option<AuditChange> {
    let (remaining, _) = credits?.as_of(Utc::now());
    Some(new_value("credits.remaining", remaining.to_string()))
}

/// A field as it is now (nothing changed it: it is what the event is about).
fn new_value(field: &str, value: String) -> AuditChange {
    AuditChange {
        field: field.to_owned(),
        old: None,
        new: Some(value),
    }
}

/// The notices that rose from `was` to `now`: the events to record.
fn risen(was: CreditNotices, now: CreditNotices) -> [bool; 2] {
    [now.low && !was.low, now.exhausted && !was.exhausted]
}

async fn notice_key_credits(db: &Database, now: DateTime<Utc>) -> AppResult<usize> {
    let mut total = 0;
    let mut after = None;
    loop {
        let mut conn = db.conn().await?;
        let page =
            lifecycle_notices::key_credit_candidates(&mut conn, after, CANDIDATE_PAGE).await?;
        after = page.last().map(|row| row.id);
        for candidate in page.iter().filter(|row| row.needs_writing(now)) {
            let id = candidate.id;
            total += crate::db::write(&mut conn, actor(), None, |conn| {
                async move {
                    let Some(row) = lifecycle_notices::lock_key_credits(conn, id).await? else {
                        return Ok(Written::unrecorded(0));
                    };
                    if !row.needs_writing(now) {
                        return Ok(Written::unrecorded(0));
                    }
                    let due = row.due(now);
                    lifecycle_notices::set_key_credit_notices(conn, &row, now).await?;
                    let mut records = Vec::new();
                    let [low, exhausted] = risen(row.noticed, due);
                    for (rose, action) in [
                        (low, AuditAction::ApiKeyCreditsLow),
                        (exhausted, AuditAction::ApiKeyCreditsExhausted),
                    ] {
                        if rose {
                            records.extend(key_record(conn, id, action).await?);
                        }
                    }
                    Ok::<_, diesel::result::Error>(Written::recorded_all(records.len(), records))
                }
                .scope_boxed()
            })
            .await?;
        }
        if (page.len() as i64) < CANDIDATE_PAGE {
            return Ok(total);
        }
    }
}

async fn notice_organization_credits(db: &Database, now: DateTime<Utc>) -> AppResult<usize> {
    let mut total = 0;
    let mut after = None;
    loop {
        let mut conn = db.conn().await?;
        let page =
            lifecycle_notices::organization_credit_candidates(&mut conn, after, CANDIDATE_PAGE)
                .await?;
        after = page.last().map(|row| row.id);
        for candidate in page.iter().filter(|row| row.needs_writing(now)) {
            let id = candidate.id;
            total += crate::db::write(&mut conn, actor(), None, |conn| {
                async move {
                    let Some(row) = lifecycle_notices::lock_organization_credits(conn, id).await?
                    else {
                        return Ok(Written::unrecorded(0));
                    };
                    if !row.needs_writing(now) {
                        return Ok(Written::unrecorded(0));
                    }
                    let due = row.due(now);
                    lifecycle_notices::set_organization_credit_notices(conn, &row, now).await?;
                    let records = organization_records(conn, &row, due).await?;
                    Ok::<_, diesel::result::Error>(Written::recorded_all(records.len(), records))
                }
                .scope_boxed()
            })
            .await?;
        }
        if (page.len() as i64) < CANDIDATE_PAGE {
            return Ok(total);
        }
    }
}

/// The events of an organization's notices that rose to `due`.
async fn organization_records(
    conn: &mut crate::db::DbConnection,
    row: &CreditNoticeRow<OrganizationId>,
    due: CreditNotices,
) -> diesel::QueryResult<Vec<AuditRecord>> {
    let Some(organization) = Organization::find(conn, row.id).await? else {
        return Ok(Vec::new());
    };
    let organization = OrganizationWithLimits::load(conn, organization).await?;
    let balance = credits_change(organization.limits.and_then(|limits| limits.credits()));
    let [low, exhausted] = risen(row.noticed, due);
    Ok([
        (low, AuditAction::OrganizationCreditsLow),
        (exhausted, AuditAction::OrganizationCreditsExhausted),
    ]
    .into_iter()
    .filter(|(rose, _)| *rose)
    .map(|(_, action)| {
        AuditRecord::new(action, AuditTarget::organization(row.id))
            .with_changes(balance.clone().into_iter().collect())
            .with_state(state_of(organization.clone()))
    })
    .collect())
}
