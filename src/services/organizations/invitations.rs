//! Invitations: created with a token shown once, listed, withdrawn and
//! accepted, each acceptance making one membership.

use chrono::Utc;
use diesel_async::scoped_futures::ScopedFutureExt;

use super::members::{member_state, organization_for_member_change, MemberView};
use crate::auth::{ownership, Caller};
use crate::db::models::{CreateRequest, Invitation, Member, NewInvitation, Organization, User};
use crate::db::sql_types::Timestamp;
use crate::db::{is_foreign_key_violation, DbConnection, Invalidation, Written};
use crate::domain::{
    AuditAction, AuditChange, AuditRecord, AuditTarget, CreateInvitation, InvitationId,
    InvitationToken, ListOf, OrgAction, OrgRole, OrganizationId, Page, UserId,
};
use crate::error::{AppError, AppResult};
use crate::proto;
use crate::proto::CreateInvitationResponse;
use crate::services::convert::{role_message, timestamp};
use crate::services::events::state_of;
use crate::services::{audit, delete_row, retries, AppState};

/// A new invitation, with its token: shown once, never stored.
pub struct NewInvitationWithToken {
    pub invitation: Invitation,
    pub token: InvitationToken,
}

pub async fn create_invitation(
    state: &AppState,
    caller: &Caller,
    cmd: CreateInvitation,
) -> AppResult<NewInvitationWithToken> {
    let mut conn = state.db.conn().await?;
    organization_for_member_change(
        &mut conn,
        state,
        caller,
        cmd.organization,
        OrgAction::Manage,
    )
    .await?;
    let retry = cmd
        .request
        .as_ref()
        .map(|request| retries::request_key(caller, "CreateInvitation", request));
    let source = retries::SecretSource::new(state.webhook_signer.as_ref(), retry.as_ref(), INVITES);
    let token = InvitationToken::generate_with(&mut source.first());
    let digest = token.digest();
    let now = Utc::now();
    let ttl = chrono::Duration::from_std(cmd.ttl).map_err(AppError::internal)?;
    let new = NewInvitation {
        id: InvitationId::generate(),
        organization_id: cmd.organization,
        email: cmd.email.as_str(),
        role: cmd.role.as_str(),
        token_hash: &digest,
        created_by: caller.user_id(),
        created_at: Timestamp(now),
        expires_at: Timestamp(now + ttl),
    };
    let target = AuditTarget::invitation(new.id, cmd.organization);
    // The email is personal data of someone who is not a member yet: the
    // log records that an invitation went out, and with which role.
    let record = AuditRecord::new(AuditAction::InvitationCreate, target)
        .with_changes(vec![AuditChange::values("role", "", cmd.role)]);
    let (retry, salt, organization) = (retry.as_ref(), source.salt(), cmd.organization);
    let (invitation, first) = state
        .write(&mut conn, audit::actor(caller), None, |conn| {
            async move {
                // The organization's row locked first, as every member
                // change locks it.
                if !Organization::lock(conn, organization).await? {
                    return Err(AppError::NotFound("organization"));
                }
                // A retry answers first: the invitee may have joined since.
                if let Some(key) = retry {
                    if let Some(first) = retries::claim(conn, key, salt, now).await? {
                        let invitation = retries::first_created(
                            conn,
                            &first,
                            "invitation",
                            InvitationId::parse,
                            Invitation::find,
                        );
                        return Ok(Written::unrecorded((invitation.await?, Some(first))));
                    }
                }
                if Member::find_by_email(conn, organization, new.email)
                    .await?
                    .is_some()
                {
                    return Err(AppError::AlreadyExists(
                        "a member of the organization already has this email".into(),
                    ));
                }
                if let Some(key) = retry {
                    CreateRequest::created(conn, key, &new.id.to_string()).await?;
                }
                let invitation = Invitation::insert(conn, new).await.map_err(|error| {
                    match is_foreign_key_violation(&error) {
                        true => AppError::NotFound("organization"),
                        false => error.into(),
                    }
                })?;
                let record = record.with_state(state_of(invitation.clone()));
                Ok(Written::recorded((invitation, None), record))
            }
            .scope_boxed()
        })
        .await?;
    let Some(first) = first else {
        tracing::info!(organization_id = %cmd.organization, invitation_id = %invitation.id, "invitation created");
        return Ok(NewInvitationWithToken { invitation, token });
    };
    // A retry: the first request's token, drawn again, if it can be.
    let mut stream = source.again(&first, "invitation", INVITE_AGAIN)?;
    let token = InvitationToken::generate_with(&mut stream);
    let holder = Invitation::find_by_token(&mut conn, &token.digest()).await?;
    if holder.is_none_or(|holder| holder.id != invitation.id) {
        return Err(retries::secret_changed("invitation", INVITE_AGAIN));
    }
    Ok(NewInvitationWithToken { invitation, token })
}

/// Names the stream a retried invitation's token is drawn from.
const INVITES: &[u8; 32] = b"chatbot-backend invitation v1   ";
/// What to do when a retry cannot show the token again.
const INVITE_AGAIN: &str = "delete the invitation and invite again";

pub async fn list_invitations(
    state: &AppState,
    caller: &Caller,
    cmd: ListOf<InvitationId>,
) -> AppResult<Page<Invitation>> {
    let organization = cmd.organization;
    let mut conn = state.db.conn().await?;
    ownership::managed_organization(&mut conn, &state.memberships, caller, organization).await?;
    let invitations = Invitation::list_pending(&mut conn, cmd.organization, &cmd.page).await?;
    Ok(cmd.page.page(invitations, Invitation::cursor))
}

pub async fn delete_invitation(
    state: &AppState,
    caller: &Caller,
    id: InvitationId,
) -> AppResult<()> {
    let mut conn = state.db.conn().await?;
    let found = Invitation::find(&mut conn, id)
        .await?
        .map(|invitation| (invitation.organization_id, invitation.organization_id));
    let organization =
        ownership::managed(&mut conn, &state.memberships, caller, found, "invitation").await?;
    let record = AuditRecord::new(
        AuditAction::InvitationDelete,
        AuditTarget::invitation(id, organization),
    );
    delete_row(
        state,
        &mut conn,
        Some(Invalidation::Organization(organization)),
        "invitation",
        (audit::actor(caller), record),
        move |conn| Invitation::delete(conn, id).scope_boxed(),
    )
    .await
}

/// The caller, signed in with the invited email, joins. Accepting again
/// (a retry whose answer was lost) answers the same membership.
pub async fn accept_invitation(
    state: &AppState,
    caller: &Caller,
    token: InvitationToken,
) -> AppResult<MemberView> {
    let user = caller.person()?;
    let mut conn = state.db.conn().await?;
    let invitation = Invitation::find_by_token(&mut conn, &token.digest())
        .await?
        .ok_or(AppError::NotFound("invitation"))?;
    let organization = invitation.organization_id;
    let email = User::find(&mut conn, user)
        .await?
        .ok_or(AppError::NotFound("user"))?
        .email;
    if invitation.email != email {
        return Err(AppError::PermissionDenied);
    }
    let now = Utc::now();
    if invitation.accepted_at.is_none() && invitation.expires_at <= now {
        return Err(AppError::FailedPrecondition(
            "the invitation has expired; ask for a new one".into(),
        ));
    }
    let (id, role, inviter) = (invitation.id, invitation.role(), invitation.created_by);
    let stale = Some(Invalidation::Organization(organization));
    let member = state
        .write(&mut conn, audit::actor(caller), stale, |conn| {
            async move {
                // The organization first, as every member change locks it:
                // a delete racing this waits or finds it gone, never a
                // deadlock with the invitation's row.
                if !Organization::lock(conn, organization).await? {
                    return Err(AppError::NotFound("invitation"));
                }
                // Of two racing acceptances one marks it; the other finds it
                // marked, and by whom.
                let accepted = Invitation::accept(conn, id, user, now).await?;
                if !accepted {
                    let by = Invitation::find(conn, id)
                        .await?
                        .and_then(|i| i.accepted_by);
                    if by != Some(user) {
                        return Err(AppError::FailedPrecondition(
                            "the invitation was already accepted".into(),
                        ));
                    }
                    let member = Member::find_with_email(conn, organization, user)
                        .await?
                        .ok_or(AppError::NotFound("member"))?;
                    return Ok(Written::unrecorded(member));
                }
                // An invitation is only as good as its sender: one made by
                // an owner since removed or demoted (or deleted) cannot bring
                // anyone in, nor its sender back. Admins invite anywhere.
                if !may_still_invite(conn, organization, inviter).await? {
                    return Err(AppError::FailedPrecondition(
                        "whoever sent the invitation no longer manages the organization; ask an \
                         owner for a new one"
                            .into(),
                    ));
                }
                Member::insert(conn, organization, user, role)
                    .await
                    .map_err(|error| match error {
                        diesel::result::Error::DatabaseError(
                            diesel::result::DatabaseErrorKind::UniqueViolation,
                            _,
                        ) => AppError::AlreadyExists(
                            "you are already a member of this organization".into(),
                        ),
                        other => other.into(),
                    })?;
                let member = Member::find_with_email(conn, organization, user)
                    .await?
                    .ok_or(AppError::NotFound("member"))?;
                let target = AuditTarget::member(organization, user);
                let record = AuditRecord::new(AuditAction::MemberJoin, target)
                    .with_changes(vec![AuditChange::values("role", "", role)])
                    .with_state(state_of(member_state(member.clone())));
                Ok(Written::recorded(member, record))
            }
            .scope_boxed()
        })
        .await?;
    tracing::info!(organization_id = %organization, user_id = %user, "invitation accepted");
    Ok(MemberView {
        member,
        show_email: true,
    })
}

/// Whether `inviter` may still bring people into `organization`: an owner
/// of it, or an admin.
async fn may_still_invite(
    conn: &mut DbConnection,
    organization: OrganizationId,
    inviter: Option<UserId>,
) -> AppResult<bool> {
    let Some(inviter) = inviter else {
        return Ok(false);
    };
    let owner = Member::find(conn, organization, inviter)
        .await?
        .is_some_and(|member| member.role() == OrgRole::Owner);
    Ok(owner
        || User::find(conn, inviter)
            .await?
            .is_some_and(|user| user.role() == crate::domain::Role::Admin))
}

impl From<Invitation> for proto::Invitation {
    fn from(row: Invitation) -> Self {
        proto::Invitation {
            role: role_message(row.role()).into(),
            id: row.id.to_string(),
            organization_id: row.organization_id.to_string(),
            email: row.email,
            inviter_id: row.created_by.map(|id| id.to_string()).unwrap_or_default(),
            create_time: Some(timestamp(row.created_at)),
            expire_time: Some(timestamp(row.expires_at)),
        }
    }
}

impl From<NewInvitationWithToken> for CreateInvitationResponse {
    fn from(created: NewInvitationWithToken) -> Self {
        Self {
            invitation: Some(created.invitation.into()),
            token: created.token.expose().to_owned(),
        }
    }
}
