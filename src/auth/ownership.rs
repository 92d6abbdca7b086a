//! What a caller may act on: the one place every service looks up a
//! chatbot, a key or an organization together with the organization it
//! belongs to, and asks whether the caller may do the RPC's
//! [`OrgAction`] there. Platform admins may do everything; anyone else
//! by their role in the organization ([`OrgRole::allows`]).
//!
//! Authorization comes before existence (AIP-193): a missing resource is
//! NOT_FOUND only to an admin, who may see every resource; anyone else
//! gets PERMISSION_DENIED, and cannot tell it from another organization's.

use super::{Caller, Memberships, Principal};
use crate::db::models::{ApiKey, Chatbot, Organization};
use crate::db::DbConnection;
use crate::domain::{ApiKeyId, ChatbotId, OrgAction, OrganizationId, UserId};
use crate::error::{AppError, AppResult};

/// Where a chatbot (and with it its keys) belongs: its organization, and
/// the person accountable for it (its `owner_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub organization: OrganizationId,
    pub owner: UserId,
}

/// Whether the caller may do `action` in `organization`: PERMISSION_DENIED
/// if not. For a caller holding no connection (see [`require_on`]).
pub async fn require(
    memberships: &Memberships,
    caller: &Caller,
    organization: OrganizationId,
    action: OrgAction,
) -> AppResult<()> {
    allowed(None, memberships, caller, organization, action).await
}

/// [`require`] for a caller holding `conn`.
pub async fn require_on(
    conn: &mut DbConnection,
    memberships: &Memberships,
    caller: &Caller,
    organization: OrganizationId,
    action: OrgAction,
) -> AppResult<()> {
    allowed(Some(conn), memberships, caller, organization, action).await
}

async fn allowed(
    conn: Option<&mut DbConnection>,
    memberships: &Memberships,
    caller: &Caller,
    organization: OrganizationId,
    action: OrgAction,
) -> AppResult<()> {
    let user = match &caller.principal {
        _ if caller.is_admin() => return Ok(()),
        // A service account acts in its own organization, by its role.
        Principal::ServiceAccount(account) => {
            return match account.organization == organization && account.role.allows(action) {
                true => Ok(()),
                false => Err(AppError::PermissionDenied),
            };
        }
        Principal::User(user) => *user,
    };
    match memberships.role(conn, user, organization).await? {
        Some(role) if role.allows(action) => Ok(()),
        _ => Err(AppError::PermissionDenied),
    }
}

/// [`require`] on a lookup of a resource and its organization, keeping
/// AIP-193's rule for a resource that does not exist; `conn` is the
/// caller's, if it holds one.
pub async fn authorize<T>(
    conn: Option<&mut DbConnection>,
    memberships: &Memberships,
    caller: &Caller,
    found: Option<(T, OrganizationId)>,
    action: OrgAction,
    what: &'static str,
) -> AppResult<T> {
    match found {
        Some((resource, organization)) => {
            allowed(conn, memberships, caller, organization, action).await?;
            Ok(resource)
        }
        None if caller.is_admin() => Err(AppError::NotFound(what)),
        None => Err(AppError::PermissionDenied),
    }
}

/// The organization, if the caller may do `action` in it.
pub async fn organization(
    conn: &mut DbConnection,
    memberships: &Memberships,
    caller: &Caller,
    id: OrganizationId,
    action: OrgAction,
) -> AppResult<Organization> {
    // Permission first: a non-member learns nothing from whether the
    // organization exists, and a member's check is usually a cache hit.
    require_on(conn, memberships, caller, id, action).await?;
    Organization::find(conn, id)
        .await?
        .ok_or(AppError::NotFound("organization"))
}

/// The chatbot, if the caller may do `action` in its organization.
pub async fn chatbot(
    conn: &mut DbConnection,
    memberships: &Memberships,
    caller: &Caller,
    id: ChatbotId,
    action: OrgAction,
) -> AppResult<Chatbot> {
    let found = Chatbot::find(conn, id).await?.map(|chatbot| {
        let organization = chatbot.organization_id;
        (chatbot, organization)
    });
    authorize(Some(conn), memberships, caller, found, action, "chatbot").await
}

/// The organization, for a caller who manages it: what every owner-only
/// change of an organization's things asks first.
pub async fn managed_organization(
    conn: &mut DbConnection,
    memberships: &Memberships,
    caller: &Caller,
    id: OrganizationId,
) -> AppResult<Organization> {
    organization(conn, memberships, caller, id, OrgAction::Manage).await
}

/// `found` (a thing and its organization), for a caller who manages that
/// organization; PERMISSION_DENIED for anyone else whether or not it exists.
pub async fn managed<T>(
    conn: &mut DbConnection,
    memberships: &Memberships,
    caller: &Caller,
    found: Option<(T, OrganizationId)>,
    what: &'static str,
) -> AppResult<T> {
    authorize(
        Some(conn),
        memberships,
        caller,
        found,
        OrgAction::Manage,
        what,
    )
    .await
}

/// A chatbot already read (by GetChatbot's coalesced reads), if the caller
/// may do `action` in its organization.
pub async fn authorize_chatbot(
    memberships: &Memberships,
    caller: &Caller,
    found: Option<Chatbot>,
    action: OrgAction,
) -> AppResult<Chatbot> {
    let found = found.map(|chatbot| {
        let organization = chatbot.organization_id;
        (chatbot, organization)
    });
    authorize(None, memberships, caller, found, action, "chatbot").await
}

/// Where the chatbot belongs, if the caller may do `action` there: for a
/// call about the chatbot's keys, which needs no more of the chatbot.
pub async fn chatbot_placement(
    conn: &mut DbConnection,
    memberships: &Memberships,
    caller: &Caller,
    id: ChatbotId,
    action: OrgAction,
) -> AppResult<Placement> {
    let found = Chatbot::find_organization(conn, id)
        .await?
        .map(|(organization, owner)| {
            let placement = Placement {
                organization,
                owner,
            };
            (placement, organization)
        });
    authorize(Some(conn), memberships, caller, found, action, "chatbot").await
}

/// The key and where its chatbot belongs, if the caller may do `action`
/// there.
pub async fn api_key(
    conn: &mut DbConnection,
    memberships: &Memberships,
    caller: &Caller,
    id: ApiKeyId,
    action: OrgAction,
) -> AppResult<(ApiKey, Placement)> {
    let found =
        ApiKey::find_with_organization(conn, id)
            .await?
            .map(|(key, organization, owner)| {
                let placement = Placement {
                    organization,
                    owner,
                };
                ((key, placement), organization)
            });
    authorize(Some(conn), memberships, caller, found, action, "API key").await
}
