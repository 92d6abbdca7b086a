//! The rules the API key writes keep, as pure functions: which keys may be
//! rotated or have their expiry moved, the active-key limit, and what a
//! credits change does to a key's limits. The operations read the rows,
//! ask here, and write what the answer says.

use chrono::{DateTime, Utc};

use super::{CreditsChange, CreditsSetting, Refill};

/// A write refused because of the state the key or chatbot is in
/// (FAILED_PRECONDITION): retrying the same call cannot succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precondition(pub String);

impl Precondition {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Where a key stands in its life, as the rules need it.
#[derive(Debug, Clone, Copy)]
pub struct KeyLifecycle {
    pub revoked: bool,
    /// A rotation replaced it (it lives out its grace period, if any).
    pub rotated: bool,
    pub expires_at: Option<DateTime<Utc>>,
}

impl KeyLifecycle {
    fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// Only a live key that no rotation has replaced is rotated: a key is
    /// replaced once.
    pub fn may_rotate(&self, now: DateTime<Utc>) -> Result<(), Precondition> {
        if self.revoked {
            return Err(Precondition::new(
                "the key is revoked; create a new key instead",
            ));
        }
        if self.rotated {
            return Err(Precondition::new(
                "the key was already replaced by a rotation; rotate its replacement instead",
            ));
        }
        if self.expired(now) {
            return Err(Precondition::new(
                "the key has expired; create a new key instead",
            ));
        }
        Ok(())
    }

    /// Not once the key has ended, since that would bring back a key that
    /// no longer counts against the chatbot's active-key limit, and not for
    /// a key a rotation replaced, whose grace period the rotation set.
    pub fn may_move_expiry(&self, now: DateTime<Utc>) -> Result<(), Precondition> {
        if self.rotated {
            return Err(Precondition::new(
                "the key was replaced by a rotation, which set when it ends",
            ));
        }
        if self.expired(now) {
            return Err(Precondition::new(
                "the key has expired; create a new key instead",
            ));
        }
        Ok(())
    }
}

/// Whether a chatbot with `active` live keys may get one more.
pub fn may_add_active_key(active: i64, max_active: i64) -> Result<(), Precondition> {
    if active >= max_active {
        return Err(Precondition(format!(
            "the chatbot already has {max_active} active API keys; revoke one first"
        )));
    }
    Ok(())
}

/// Whether a rotation may start with `active` live keys. A key in its
/// grace period is a live secret, so it counts beside its replacement;
/// without a grace period the replacement takes the old key's place, and
/// the count does not change.
pub fn may_rotate_with_grace(
    grace_period: bool,
    active: i64,
    max_active: i64,
) -> Result<(), Precondition> {
    if grace_period && active >= max_active {
        return Err(Precondition(format!(
            "the chatbot already has {max_active} active API keys, and during a grace period both keys count; rotate without a grace period or revoke a key first"
        )));
    }
    Ok(())
}

/// What a credits change writes to a key's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditsEdit {
    Keep,
    /// The balance and the refill together; `None` makes the key unlimited.
    Replace(Option<CreditsSetting>),
    /// The balance only.
    Balance(i64),
    /// The refill only; `None` stops refilling.
    Refill(Option<Refill>),
    /// The low threshold only.
    LowThreshold(Option<i64>),
    /// This many credits more than the balance as it is when written.
    Add(i64),
}

impl CreditsChange {
    /// Whether [`Self::edit`] needs to know if the key has a balance now.
    pub fn depends_on_balance(&self) -> bool {
        matches!(self, Self::Refill(_) | Self::LowThreshold(_) | Self::Add(_))
    }

    /// Whether this change needs credits to change: a low threshold of a
    /// key (or organization) whose credits are unlimited would never apply.
    pub fn needs_balance(&self) -> bool {
        matches!(self, Self::LowThreshold(Some(_)) | Self::Add(_))
    }

    /// The edit this change makes to a key that has a balance or not. A
    /// refill needs a balance: an unlimited key given a refill starts at the
    /// refill's amount, and stopping the refill of an unlimited key changes
    /// nothing.
    pub fn edit(self, has_balance: bool) -> CreditsEdit {
        match self {
            Self::Unchanged => CreditsEdit::Keep,
            Self::Replace(credits) => CreditsEdit::Replace(credits),
            Self::Balance(remaining) => CreditsEdit::Balance(remaining),
            Self::Refill(Some(refill)) if !has_balance => {
                CreditsEdit::Replace(Some(CreditsSetting {
                    remaining: refill.amount(),
                    refill: Some(refill),
                    low_threshold: None,
                }))
            }
            Self::Refill(Some(refill)) => CreditsEdit::Refill(Some(refill)),
            Self::Refill(None) if has_balance => CreditsEdit::Refill(None),
            Self::Refill(None) => CreditsEdit::Keep,
            Self::LowThreshold(threshold) if has_balance => CreditsEdit::LowThreshold(threshold),
            Self::LowThreshold(_) => CreditsEdit::Keep,
            Self::Add(amount) if has_balance => CreditsEdit::Add(amount),
            Self::Add(_) => CreditsEdit::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeDelta;

    use super::*;

    fn live() -> KeyLifecycle {
        KeyLifecycle {
            revoked: false,
            rotated: false,
            expires_at: None,
        }
    }

    fn hourly(amount: i64) -> Refill {
        Refill::parse("refill", amount, Duration::from_secs(3600)).expect("a valid refill")
    }

    #[test]
    fn a_live_key_may_be_rotated_and_have_its_expiry_moved() {
        let now = Utc::now();
        let later = KeyLifecycle {
            expires_at: Some(now + TimeDelta::hours(1)),
            ..live()
        };
        for key in [live(), later] {
            assert_eq!(key.may_rotate(now), Ok(()));
            assert_eq!(key.may_move_expiry(now), Ok(()));
        }
    }

    #[test]
    fn an_ended_or_replaced_key_may_not_be_rotated() {
        let now = Utc::now();
        let revoked = KeyLifecycle {
            revoked: true,
            ..live()
        };
        let rotated = KeyLifecycle {
            rotated: true,
            ..live()
        };
        let expired = KeyLifecycle {
            expires_at: Some(now),
            ..live()
        };
        for key in [revoked, rotated, expired] {
            assert!(key.may_rotate(now).is_err(), "{key:?}");
        }
        assert!(revoked.may_rotate(now).unwrap_err().0.contains("revoked"));
        assert!(rotated.may_rotate(now).unwrap_err().0.contains("replaced"));
        assert!(expired.may_rotate(now).unwrap_err().0.contains("expired"));
    }

    #[test]
    fn an_expired_or_replaced_key_keeps_its_expiry_but_a_revoked_one_may_move_it() {
        let now = Utc::now();
        let rotated = KeyLifecycle {
            rotated: true,
            ..live()
        };
        let expired = KeyLifecycle {
            expires_at: Some(now - TimeDelta::seconds(1)),
            ..live()
        };
        assert!(rotated.may_move_expiry(now).is_err());
        assert!(expired.may_move_expiry(now).is_err());
        let revoked = KeyLifecycle {
            revoked: true,
            ..live()
        };
        assert_eq!(revoked.may_move_expiry(now), Ok(()));
    }

    #[test]
    fn the_active_key_limit_counts_a_grace_period_key_beside_its_replacement() {
        assert_eq!(may_add_active_key(4, 5), Ok(()));
        assert!(may_add_active_key(5, 5).is_err());
        assert_eq!(may_rotate_with_grace(false, 5, 5), Ok(()));
        assert_eq!(may_rotate_with_grace(true, 4, 5), Ok(()));
        assert!(may_rotate_with_grace(true, 5, 5).is_err());
    }

    #[test]
    fn a_refill_on_an_unlimited_key_starts_its_balance_at_the_refill_amount() {
        let refill = hourly(100);
        assert_eq!(
            CreditsChange::Refill(Some(refill)).edit(false),
            CreditsEdit::Replace(Some(CreditsSetting {
                remaining: 100,
                refill: Some(refill),
                low_threshold: None,
            }))
        );
        assert_eq!(
            CreditsChange::Refill(Some(refill)).edit(true),
            CreditsEdit::Refill(Some(refill))
        );
    }

    #[test]
    fn stopping_the_refill_of_an_unlimited_key_changes_nothing() {
        assert_eq!(CreditsChange::Refill(None).edit(false), CreditsEdit::Keep);
        assert_eq!(
            CreditsChange::Refill(None).edit(true),
            CreditsEdit::Refill(None)
        );
    }

    #[test]
    fn only_a_refill_change_depends_on_the_balance_and_the_others_pass_through() {
        let setting = Some(CreditsSetting {
            remaining: 5,
            refill: None,
            low_threshold: Some(2),
        });
        for has_balance in [false, true] {
            assert_eq!(
                CreditsChange::Unchanged.edit(has_balance),
                CreditsEdit::Keep
            );
            assert_eq!(
                CreditsChange::Replace(setting).edit(has_balance),
                CreditsEdit::Replace(setting)
            );
            assert_eq!(
                CreditsChange::Balance(7).edit(has_balance),
                CreditsEdit::Balance(7)
            );
        }
        assert!(CreditsChange::Refill(None).depends_on_balance());
        assert!(!CreditsChange::Balance(7).depends_on_balance());
        assert!(!CreditsChange::Replace(None).depends_on_balance());
        assert!(!CreditsChange::Unchanged.depends_on_balance());
    }
}
