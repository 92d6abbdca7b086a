//! The arithmetic of a batch of spends, pure and in memory: due refills,
//! refunds of finished reservations, then each spend in arrival order
//! against its key's and its organization's balance, and the balances that
//! changed. [`settle`] reads nothing and writes nothing; the caller reads
//! the rows before and writes what it returns.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::SpendOutcome;
use crate::db::models::{Balance, KeyLimits, OrganizationBalance, OrganizationLimits, Reservation};
use crate::domain::{ApiKeyId, CreditsState, LimitScope, OrganizationId};

/// A balance: a key's or an organization's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Account {
    Key(ApiKeyId),
    Organization(OrganizationId),
}

/// A spend as [`settle`] judges it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ask {
    pub(super) id: ApiKeyId,
    pub(super) organization: Option<OrganizationId>,
    pub(super) cost: i64,
}

/// Credits a finished reservation gives back to a balance it held on
/// (negative: the excess a settlement above it takes), if the balance is
/// still in the refill period the reservation was made in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Refund {
    pub(super) account: Account,
    pub(super) amount: i64,
    pub(super) reserved_at: DateTime<Utc>,
}

impl Refund {
    /// What a finished reservation gives back: to the key's balance if it
    /// held on it, and to its organization's if it held there.
    pub(super) fn of(reservation: &Reservation) -> impl Iterator<Item = Refund> {
        let amount = reservation.reserved - reservation.charged.unwrap_or(0);
        let reserved_at = reservation.created_at;
        let key = reservation
            .from_balance
            .then_some(Account::Key(reservation.api_key_id));
        let organization = reservation.organization_id.map(Account::Organization);
        key.into_iter()
            .chain(organization)
            .map(move |account| Refund {
                account,
                amount,
                reserved_at,
            })
    }
}

/// What [`settle`] came to: each spend's outcome, and the balances to
/// write.
pub(super) struct Settled {
    pub(super) outcomes: Vec<SpendOutcome>,
    pub(super) keys: Vec<Balance>,
    pub(super) organizations: Vec<OrganizationBalance>,
}

/// A balance as a batch changes it.
pub(super) struct Standing {
    remaining: i64,
    next_refill: Option<DateTime<Utc>>,
    refilled_at: Option<DateTime<Utc>>,
    /// When the balance's current refill period began, if it refills.
    period_start: Option<DateTime<Utc>>,
    changed: bool,
}

impl Standing {
    pub(super) fn of(credits: CreditsState, now: DateTime<Utc>) -> Self {
        let (remaining, next_refill) = credits.as_of(now);
        let refilled_at = credits.refill.and_then(|(refill, last)| {
            Some(refill.latest_boundary(last, now)).filter(|boundary| *boundary > last)
        });
        let period_start = refilled_at.or(credits.refill.map(|(_, last)| last));
        Self {
            remaining,
            next_refill,
            refilled_at,
            period_start,
            changed: refilled_at.is_some(),
        }
    }
}

/// Applies `refunds` and then `spends` in order to the keys' and
/// organizations' rows as of `now`. A spend must fit both its key's balance
/// (if it has credits) and its organization's (if it names one with
/// credits), and then takes its cost from both. A due refill first resets a
/// balance, and a refund from before a refill is dropped (the refill gave
/// the period its whole amount). A key without a row is gone when the
/// spend is the key's alone, or when `gone` says so.
pub(super) fn settle(
    keys: &[KeyLimits],
    organizations: &[OrganizationLimits],
    refunds: &[Refund],
    gone: &HashSet<ApiKeyId>,
    spends: &[Ask],
    now: DateTime<Utc>,
) -> Settled {
    let mut accounts: HashMap<Account, Standing> =
        keys.iter()
            .filter_map(|row| Some((Account::Key(row.api_key_id), row.credits()?)))
            .chain(organizations.iter().filter_map(|row| {
                Some((Account::Organization(row.organization_id), row.credits()?))
            }))
            .map(|(account, credits)| (account, Standing::of(credits, now)))
            .collect();
    for refund in refunds {
        if let Some(standing) = accounts.get_mut(&refund.account) {
            if standing
                .period_start
                .is_none_or(|start| start <= refund.reserved_at)
            {
                standing.remaining = standing.remaining.saturating_add(refund.amount);
                standing.changed = true;
            }
        }
    }
    let with_row: HashSet<ApiKeyId> = keys.iter().map(|row| row.api_key_id).collect();
    let outcomes = spends
        .iter()
        .map(|ask| {
            // A key that was looked up with credits has a row until it is
            // deleted (the row goes by cascade).
            if !with_row.contains(&ask.id) && (ask.organization.is_none() || gone.contains(&ask.id))
            {
                return SpendOutcome::KeyGone;
            }
            let key = Account::Key(ask.id);
            let organization = ask.organization.map(Account::Organization);
            let held = |account: &Account| accounts.get(account).map(|s| s.remaining);
            let key_left = held(&key);
            let organization_left = organization.as_ref().and_then(held);
            for (account, left, scope) in [
                (key, key_left, LimitScope::ApiKey),
                (
                    organization.unwrap_or(key),
                    organization_left,
                    LimitScope::Organization,
                ),
            ] {
                if left.is_some_and(|left| left < ask.cost) {
                    return SpendOutcome::Short {
                        remaining: left.unwrap_or(0),
                        next_refill: accounts.get(&account).and_then(|s| s.next_refill),
                        scope,
                    };
                }
            }
            if key_left.is_none() && organization_left.is_none() {
                return SpendOutcome::Unlimited;
            }
            let mut take = |account: Option<Account>| {
                let standing = accounts.get_mut(&account?)?;
                standing.remaining -= ask.cost;
                standing.changed = true;
                Some(standing.remaining)
            };
            SpendOutcome::Spent {
                key: take(Some(key)),
                organization: take(organization),
            }
        })
        .collect();
    let was: HashMap<ApiKeyId, &KeyLimits> = keys.iter().map(|row| (row.api_key_id, row)).collect();
    let mut key_balances = Vec::new();
    let mut organization_balances = Vec::new();
    for (account, standing) in accounts {
        if !standing.changed {
            continue;
        }
        match account {
            Account::Key(id) => key_balances.push(Balance {
                id,
                remaining: standing.remaining,
                refilled_at: standing.refilled_at,
                was: *was[&id],
            }),
            Account::Organization(id) => organization_balances.push(OrganizationBalance {
                id,
                remaining: standing.remaining,
                refilled_at: standing.refilled_at,
            }),
        }
    }
    key_balances.sort_unstable_by_key(|balance| balance.id);
    organization_balances.sort_unstable_by_key(|balance| balance.id);
    Settled {
        outcomes,
        keys: key_balances,
        organizations: organization_balances,
    }
}
