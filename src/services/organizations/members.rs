//! An organization's members: listing them, changing a role and removing one,
//! each under the organization's row lock so the last-owner rule holds.

use diesel_async::scoped_futures::ScopedFutureExt;

use crate::auth::{ownership, Caller};
use crate::db::models::{Member, MemberWithEmail, Organization};
use crate::db::{DbConnection, Invalidation, Written};
use crate::domain::{
    keeps_an_owner, may_change_members, AuditAction, AuditChange, AuditRecord, AuditTarget, ListOf,
    MemberRef, OrgAction, OrgRole, OrganizationId, Page, UpdateMember, UserId,
};
use crate::error::{AppError, AppResult};
use crate::proto;
use crate::proto::{AcceptInvitationResponse, ListMembersResponse, UpdateMemberResponse};
use crate::services::convert::{role_message, timestamp};
use crate::services::events::state_of;
use crate::services::{audit, AppState};

/// A member as its event carries it: every member may watch the events,
/// so the email is left out, as ListMembers leaves it out for a viewer.
pub(super) fn member_state(member: MemberWithEmail) -> proto::event::Resource {
    let view = MemberView {
        member,
        show_email: false,
    };
    proto::event::Resource::Member(view.into())
}

/// A member as the caller may see them: a viewer sees only their own
/// email.
pub struct MemberView {
    pub member: MemberWithEmail,
    pub show_email: bool,
}

/// Members see each other's emails from EDITOR up.
pub async fn list_members(
    state: &AppState,
    caller: &Caller,
    cmd: ListOf<UserId>,
) -> AppResult<Page<MemberView>> {
    let organization = cmd.organization;
    let (memberships, view, edit) = (&state.memberships, OrgAction::View, OrgAction::Edit);
    let mut conn = state.db.conn().await?;
    ownership::organization(&mut conn, memberships, caller, organization, view).await?;
    let sees_emails = ownership::require_on(&mut conn, memberships, caller, organization, edit)
        .await
        .is_ok();
    let members = Member::list(&mut conn, organization, &cmd.page).await?;
    let page = cmd.page.page(members, |row| row.member.cursor());
    Ok(Page {
        items: page
            .items
            .into_iter()
            .map(|member| MemberView {
                show_email: sees_emails || caller.user_id() == Some(member.member.user_id),
                member,
            })
            .collect(),
        next_page_token: page.next_page_token,
    })
}

/// The organization (for a member change) if the caller may make it there;
/// FAILED_PRECONDITION for a personal one.
pub(super) async fn organization_for_member_change(
    conn: &mut DbConnection,
    state: &AppState,
    caller: &Caller,
    id: OrganizationId,
    action: OrgAction,
) -> AppResult<Organization> {
    let organization =
        ownership::organization(conn, &state.memberships, caller, id, action).await?;
    may_change_members(organization.is_personal())?;
    Ok(organization)
}

/// The caller's right to manage `organization`, read again under its lock
/// (not from the cache): an owner demoted while their call waited for the
/// lock no longer manages it.
async fn still_manages(
    conn: &mut DbConnection,
    caller: &Caller,
    organization: OrganizationId,
) -> AppResult<()> {
    if caller.is_admin() {
        return Ok(());
    }
    let Some(user) = caller.user_id() else {
        return Err(AppError::PermissionDenied);
    };
    match Member::find(conn, organization, user).await? {
        Some(member) if member.role().allows(OrgAction::Manage) => Ok(()),
        _ => Err(AppError::PermissionDenied),
    }
}

/// The member's row, read under the organization's lock.
async fn locked_member(conn: &mut DbConnection, member: MemberRef) -> AppResult<Member> {
    if !Organization::lock(conn, member.organization).await? {
        return Err(AppError::NotFound("organization"));
    }
    Member::find(conn, member.organization, member.user)
        .await?
        .ok_or(AppError::NotFound("member"))
}

pub async fn update_member(
    state: &AppState,
    caller: &Caller,
    cmd: UpdateMember,
) -> AppResult<MemberView> {
    let UpdateMember { member, role } = cmd;
    let mut conn = state.db.conn().await?;
    organization_for_member_change(
        &mut conn,
        state,
        caller,
        member.organization,
        OrgAction::Manage,
    )
    .await?;
    let stale = Some(Invalidation::Organization(member.organization));
    let updated = state
        .write(&mut conn, audit::actor(caller), stale, |conn| {
            async move {
                let current = locked_member(conn, member).await?;
                still_manages(conn, caller, member.organization).await?;
                let was = current.role();
                let owners = Member::count_owners(conn, member.organization).await?;
                keeps_an_owner(owners, was == OrgRole::Owner, role == OrgRole::Owner)?;
                Member::set_role(conn, member.organization, member.user, role).await?;
                let updated = Member::find_with_email(conn, member.organization, member.user)
                    .await?
                    .ok_or(AppError::NotFound("member"))?;
                if was == role {
                    return Ok(Written::unrecorded(updated));
                }
                let target = AuditTarget::member(member.organization, member.user);
                let record = AuditRecord::new(AuditAction::MemberRoleChange, target)
                    .with_changes(vec![AuditChange::values("role", was, role)])
                    .with_state(state_of(member_state(updated.clone())));
                Ok(Written::recorded(updated, record))
            }
            .scope_boxed()
        })
        .await?;
    tracing::info!(organization_id = %member.organization, user_id = %member.user, %role, "member's role changed");
    Ok(MemberView {
        member: updated,
        show_email: true,
    })
}

/// Owners remove anyone; any member may remove themselves (leave).
pub async fn remove_member(state: &AppState, caller: &Caller, member: MemberRef) -> AppResult<()> {
    let action = match caller.user_id() == Some(member.user) {
        true => OrgAction::View,
        false => OrgAction::Manage,
    };
    let mut conn = state.db.conn().await?;
    organization_for_member_change(&mut conn, state, caller, member.organization, action).await?;
    let target = AuditTarget::member(member.organization, member.user);
    let record = AuditRecord::new(AuditAction::MemberRemove, target);
    let stale = Some(Invalidation::Organization(member.organization));
    state
        .write(&mut conn, audit::actor(caller), stale, |conn| {
            async move {
                let current = locked_member(conn, member).await?;
                if action == OrgAction::Manage {
                    still_manages(conn, caller, member.organization).await?;
                }
                let owners = Member::count_owners(conn, member.organization).await?;
                keeps_an_owner(owners, current.role() == OrgRole::Owner, false)?;
                Member::remove(conn, member.organization, member.user).await?;
                Ok(Written::recorded((), record))
            }
            .scope_boxed()
        })
        .await?;
    tracing::info!(organization_id = %member.organization, user_id = %member.user, "member removed");
    Ok(())
}

impl From<MemberView> for proto::Member {
    fn from(view: MemberView) -> Self {
        let MemberWithEmail { member, email } = view.member;
        proto::Member {
            organization_id: member.organization_id.to_string(),
            user_id: member.user_id.to_string(),
            email: if view.show_email {
                email
            } else {
                String::new()
            },
            role: role_message(member.role()).into(),
            create_time: Some(timestamp(member.created_at)),
            update_time: Some(timestamp(member.updated_at)),
        }
    }
}

impl From<MemberView> for UpdateMemberResponse {
    fn from(member: MemberView) -> Self {
        Self {
            member: Some(member.into()),
        }
    }
}

impl From<MemberView> for AcceptInvitationResponse {
    fn from(member: MemberView) -> Self {
        Self {
            member: Some(member.into()),
        }
    }
}

impl From<Page<MemberView>> for ListMembersResponse {
    fn from(page: Page<MemberView>) -> Self {
        Self {
            members: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }
    }
}
