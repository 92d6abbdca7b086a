//! Organizations: who belongs to one and what each role allows. The rules
//! are here, as pure functions, so that every RPC asks the same question
//! ([`OrgRole::allows`]) and the one table in docs/security.md can be checked
//! against one place.

use std::fmt;
use std::str::FromStr;

use super::display_text::DisplayName;
use super::Precondition;

/// A member's role in an organization, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrgRole {
    Owner,
    Editor,
    Viewer,
}

/// What an RPC does in an organization, for [`OrgRole::allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgAction {
    /// Read its chatbots, keys (never secrets), usage, audit events and
    /// members.
    View,
    /// Create, change, rotate, revoke and delete its chatbots and keys.
    Edit,
    /// Manage the organization itself, its members and invitations.
    Manage,
}

impl OrgRole {
    /// The permission table docs/security.md states, in one place.
    pub fn allows(self, action: OrgAction) -> bool {
        match action {
            OrgAction::View => true,
            OrgAction::Edit => matches!(self, Self::Owner | Self::Editor),
            OrgAction::Manage => self == Self::Owner,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Editor => "editor",
            Self::Viewer => "viewer",
        }
    }
}

impl fmt::Display for OrgRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrgRole {
    type Err = anyhow::Error;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "owner" => Ok(Self::Owner),
            "editor" => Ok(Self::Editor),
            "viewer" => Ok(Self::Viewer),
            other => Err(anyhow::anyhow!("unknown organization role {other:?}")),
        }
    }
}

/// An organization's (or a service account's) display name.
pub type OrganizationName = DisplayName;

/// An organization always keeps an owner: a change that would leave it
/// with none (the last owner removed, demoted or leaving) is refused.
/// `owners` counts the owners before the change, read under the
/// organization's lock.
pub fn keeps_an_owner(
    owners: i64,
    member_is_owner: bool,
    stays_owner: bool,
) -> Result<(), Precondition> {
    if member_is_owner && !stays_owner && owners <= 1 {
        return Err(Precondition(
            "an organization keeps at least one owner: make another member an owner first".into(),
        ));
    }
    Ok(())
}

/// A personal organization has exactly one member, its person.
pub fn may_change_members(personal: bool) -> Result<(), Precondition> {
    match personal {
        true => Err(Precondition(
            "a personal organization has only its own person; create an organization to share chatbots"
                .into(),
        )),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_allows_what_the_table_says() {
        use OrgAction::*;
        let table = [
            (OrgRole::Owner, [true, true, true]),
            (OrgRole::Editor, [true, true, false]),
            (OrgRole::Viewer, [true, false, false]),
        ];
        for (role, allowed) in table {
            for (action, allowed) in [View, Edit, Manage].into_iter().zip(allowed) {
                assert_eq!(role.allows(action), allowed, "{role} {action:?}");
            }
        }
    }

    #[test]
    fn the_last_owner_cannot_leave_or_be_demoted() {
        assert!(keeps_an_owner(1, true, false).is_err());
        assert!(keeps_an_owner(2, true, false).is_ok());
        assert!(keeps_an_owner(1, true, true).is_ok());
        assert!(keeps_an_owner(1, false, false).is_ok());
    }

    #[test]
    fn roles_read_back_from_their_names() {
        for role in [OrgRole::Owner, OrgRole::Editor, OrgRole::Viewer] {
            assert_eq!(role.as_str().parse::<OrgRole>().unwrap(), role);
        }
    }
}
