//! OrganizationService: organizations, their members and invitations, and
//! an organization's usage. Who may do what is [`OrgRole::allows`], asked
//! through [`ownership`]; every change to who belongs commits with an
//! [`Invalidation::Organization`], so it takes effect on every replica at
//! the next call. Each organization's member changes run under its row's
//! lock, so the last-owner rule holds against concurrent changes.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel_async::scoped_futures::ScopedFutureExt;
use tonic::Request;

use super::convert::{self, list_of, mask_paths, parse_role, role_message, timestamp};
use super::events::state_of;
use super::{audit, delete_row, required, retries, service_accounts, AppState, Rpc};
use crate::auth::{ownership, Caller};
use crate::db::models::{
    CreateRequest, Invitation, KeyLimitChanges, KeyUsage, Member, MemberWithEmail, NewInvitation,
    NewOrganization, Organization, OrganizationChanges, OrganizationLimits, OrganizationWithLimits,
    User,
};
use crate::db::sql_types::Timestamp;
use crate::db::{is_foreign_key_violation, DbConnection, Invalidation, Written};
use crate::domain::{
    keeps_an_owner, may_change_members, AuditAction, AuditChange, AuditRecord, AuditTarget,
    CreateInvitation, CreateOrganization, Email, GetUsage, InvitationId, InvitationToken,
    LimitsUpdate, ListOf, MemberRef, OrgAction, OrgRole, OrganizationId, OrganizationName, Page,
    PageRequest, ServiceAccountId, UpdateMember, UpdateOrganization, UserId,
};
use crate::error::{parsed, AppError, AppResult, FieldViolation, Violations};
use crate::proto;
use crate::proto::organization_service_server::OrganizationService;
use crate::proto::{
    AcceptInvitationRequest, AcceptInvitationResponse, CreateInvitationRequest,
    CreateInvitationResponse, CreateOrganizationRequest, CreateOrganizationResponse,
    DeleteInvitationRequest, DeleteInvitationResponse, DeleteOrganizationRequest,
    DeleteOrganizationResponse, GetOrganizationRequest, GetOrganizationResponse,
    GetOrganizationUsageRequest, GetOrganizationUsageResponse, ListInvitationsRequest,
    ListInvitationsResponse, ListMembersRequest, ListMembersResponse, ListOrganizationsRequest,
    ListOrganizationsResponse, RemoveMemberRequest, RemoveMemberResponse, UpdateMemberRequest,
    UpdateMemberResponse, UpdateOrganizationRequest, UpdateOrganizationResponse,
};
use crate::proto::{
    CreateServiceAccountRequest, CreateServiceAccountResponse, DeleteServiceAccountRequest,
    DeleteServiceAccountResponse, ListServiceAccountsRequest, ListServiceAccountsResponse,
    RevokeServiceAccountRequest, RevokeServiceAccountResponse,
};

/// How long an invitation can be accepted, unless the request says.
const DEFAULT_INVITATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const MIN_INVITATION_TTL: Duration = Duration::from_secs(60);
const MAX_INVITATION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The OrganizationService implementation.
pub struct Organizations(pub Arc<AppState>);

#[tonic::async_trait]
impl OrganizationService for Organizations {
    async fn create_organization(
        &self,
        request: Request<CreateOrganizationRequest>,
    ) -> Rpc<CreateOrganizationResponse> {
        let parse = |message: CreateOrganizationRequest| {
            let rest = CreateOrganizationRequest {
                request_id: String::new(),
                ..message.clone()
            };
            let (name, request) = parsed((
                OrganizationName::parse("name", &message.name),
                convert::create_request_id(&message.request_id, &rest, &[]),
            ))?;
            Ok::<_, AppError>(CreateOrganization { name, request })
        };
        self.0.serve(request, parse, create_organization).await
    }

    async fn get_organization(
        &self,
        request: Request<GetOrganizationRequest>,
    ) -> Rpc<GetOrganizationResponse> {
        let parse = |message: GetOrganizationRequest| OrganizationId::parse("id", &message.id);
        self.0.serve(request, parse, get_organization).await
    }

    async fn list_organizations(
        &self,
        request: Request<ListOrganizationsRequest>,
    ) -> Rpc<ListOrganizationsResponse> {
        let parse = |message: ListOrganizationsRequest| {
            PageRequest::parse(message.page_size, &message.page_token, "organizations")
        };
        self.0.serve(request, parse, list_organizations).await
    }

    async fn update_organization(
        &self,
        request: Request<UpdateOrganizationRequest>,
    ) -> Rpc<UpdateOrganizationResponse> {
        let parse = UpdateOrganization::try_from;
        self.0.serve(request, parse, update_organization).await
    }

    async fn delete_organization(
        &self,
        request: Request<DeleteOrganizationRequest>,
    ) -> Rpc<DeleteOrganizationResponse> {
        let parse = |message: DeleteOrganizationRequest| OrganizationId::parse("id", &message.id);
        self.0.serve(request, parse, delete_organization).await
    }

    async fn list_members(&self, request: Request<ListMembersRequest>) -> Rpc<ListMembersResponse> {
        let parse = |message: ListMembersRequest| {
            list_of(
                "members",
                &message.organization_id,
                message.page_size,
                &message.page_token,
            )
        };
        self.0.serve(request, parse, list_members).await
    }

    async fn update_member(
        &self,
        request: Request<UpdateMemberRequest>,
    ) -> Rpc<UpdateMemberResponse> {
        let parse = UpdateMember::try_from;
        self.0.serve(request, parse, update_member).await
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Rpc<RemoveMemberResponse> {
        let parse = |message: RemoveMemberRequest| {
            member_ref(
                ("organization_id", &message.organization_id),
                ("user_id", &message.user_id),
            )
        };
        self.0.serve(request, parse, remove_member).await
    }

    async fn create_invitation(
        &self,
        request: Request<CreateInvitationRequest>,
    ) -> Rpc<CreateInvitationResponse> {
        let parse = CreateInvitation::try_from;
        self.0.serve(request, parse, create_invitation).await
    }

    async fn list_invitations(
        &self,
        request: Request<ListInvitationsRequest>,
    ) -> Rpc<ListInvitationsResponse> {
        let parse = |message: ListInvitationsRequest| {
            list_of(
                "invitations",
                &message.organization_id,
                message.page_size,
                &message.page_token,
            )
        };
        self.0.serve(request, parse, list_invitations).await
    }

    async fn delete_invitation(
        &self,
        request: Request<DeleteInvitationRequest>,
    ) -> Rpc<DeleteInvitationResponse> {
        let parse = |message: DeleteInvitationRequest| InvitationId::parse("id", &message.id);
        self.0.serve(request, parse, delete_invitation).await
    }

    async fn accept_invitation(
        &self,
        request: Request<AcceptInvitationRequest>,
    ) -> Rpc<AcceptInvitationResponse> {
        let parse =
            |message: AcceptInvitationRequest| InvitationToken::parse("token", &message.token);
        self.0.serve(request, parse, accept_invitation).await
    }

    async fn get_organization_usage(
        &self,
        request: Request<GetOrganizationUsageRequest>,
    ) -> Rpc<GetOrganizationUsageResponse> {
        let parse = GetUsage::try_from;
        self.0.serve(request, parse, get_organization_usage).await
    }

    async fn create_service_account(
        &self,
        request: Request<CreateServiceAccountRequest>,
    ) -> Rpc<CreateServiceAccountResponse> {
        let parse = service_accounts::CreateServiceAccount::try_from;
        let create = service_accounts::create_service_account;
        self.0.serve(request, parse, create).await
    }

    async fn list_service_accounts(
        &self,
        request: Request<ListServiceAccountsRequest>,
    ) -> Rpc<ListServiceAccountsResponse> {
        let parse = service_accounts::parse_list;
        let list = service_accounts::list_service_accounts;
        self.0.serve(request, parse, list).await
    }

    async fn revoke_service_account(
        &self,
        request: Request<RevokeServiceAccountRequest>,
    ) -> Rpc<RevokeServiceAccountResponse> {
        let parse =
            |message: RevokeServiceAccountRequest| ServiceAccountId::parse("id", &message.id);
        let revoke = service_accounts::revoke_service_account;
        self.0.serve(request, parse, revoke).await
    }

    async fn delete_service_account(
        &self,
        request: Request<DeleteServiceAccountRequest>,
    ) -> Rpc<DeleteServiceAccountResponse> {
        let parse =
            |message: DeleteServiceAccountRequest| ServiceAccountId::parse("id", &message.id);
        let delete = service_accounts::delete_service_account;
        self.0.serve(request, parse, delete).await
    }
}

fn member_ref(
    (organization_field, organization): (&str, &str),
    (user_field, user): (&str, &str),
) -> AppResult<MemberRef> {
    let (organization, user) = parsed((
        OrganizationId::parse(organization_field, organization),
        UserId::parse(user_field, user),
    ))?;
    Ok(MemberRef { organization, user })
}

impl TryFrom<UpdateOrganizationRequest> for UpdateOrganization {
    type Error = AppError;

    fn try_from(request: UpdateOrganizationRequest) -> AppResult<Self> {
        let organization = required(request.organization, "organization")?;
        let mut mask = Violations::new();
        let updatable = [&["name"][..], &convert::LIMIT_PATHS[..]].concat();
        let paths = mask_paths(
            request.update_mask.as_ref(),
            &updatable,
            &[
                "id",
                "personal",
                "create_time",
                "update_time",
                "credits.next_refill_time",
                "etag",
            ],
            &mut mask,
        );
        let limits = convert::parse_limits_update(
            convert::LimitsRequest {
                resource: "organization",
                rate_limit: organization.rate_limit.as_ref(),
                credits: organization.credits.as_ref(),
                credits_to_add: request.credits_to_add,
            },
            &paths,
            &mut mask,
        );
        let empty_mask =
            |mask: Option<&prost_types::FieldMask>| mask.is_none_or(|m| m.paths.is_empty());
        if empty_mask(request.update_mask.as_ref()) && request.credits_to_add == 0 {
            mask.push(FieldViolation::new(
                "update_mask",
                "must name at least one field",
            ));
        }
        let name = paths
            .contains(&"name")
            .then(|| OrganizationName::parse("organization.name", &organization.name))
            .transpose();
        let (id, (), name) = parsed((
            OrganizationId::parse("organization.id", &organization.id),
            mask,
            name,
        ))?;
        let etag = convert::requested_etag(organization.etag);
        Ok(Self {
            id,
            name,
            limits,
            etag,
        })
    }
}

impl TryFrom<UpdateMemberRequest> for UpdateMember {
    type Error = AppError;

    fn try_from(request: UpdateMemberRequest) -> AppResult<Self> {
        let member = required(request.member, "member")?;
        let mut mask = Violations::new();
        mask_paths(
            request.update_mask.as_ref(),
            &["role"],
            &[
                "organization_id",
                "user_id",
                "email",
                "create_time",
                "update_time",
            ],
            &mut mask,
        );
        if request
            .update_mask
            .as_ref()
            .is_none_or(|m| m.paths.is_empty())
        {
            mask.push(FieldViolation::new("update_mask", "must name \"role\""));
        }
        let (organization, user, (), role) = parsed((
            OrganizationId::parse("member.organization_id", &member.organization_id),
            UserId::parse("member.user_id", &member.user_id),
            mask,
            parse_role("member.role", member.role),
        ))?;
        Ok(Self {
            member: MemberRef { organization, user },
            role,
        })
    }
}

impl TryFrom<CreateInvitationRequest> for CreateInvitation {
    type Error = AppError;

    fn try_from(request: CreateInvitationRequest) -> AppResult<Self> {
        let ttl = match &request.ttl {
            None => Ok(DEFAULT_INVITATION_TTL),
            Some(ttl) => convert::parse_duration("ttl", ttl).and_then(|ttl| {
                match (MIN_INVITATION_TTL..=MAX_INVITATION_TTL).contains(&ttl) {
                    true => Ok(ttl),
                    false => Err(FieldViolation::new(
                        "ttl",
                        "must be at least 1 minute and at most 30 days",
                    )),
                }
            }),
        };
        let rest = CreateInvitationRequest {
            request_id: String::new(),
            ..request.clone()
        };
        let (organization, email, role, ttl, request) = parsed((
            OrganizationId::parse("organization_id", &request.organization_id),
            Email::parse("email", &request.email),
            parse_role("role", request.role),
            ttl,
            convert::create_request_id(&request.request_id, &rest, &[]),
        ))?;
        Ok(Self {
            organization,
            email,
            role,
            ttl,
            request,
        })
    }
}

impl TryFrom<GetOrganizationUsageRequest> for GetUsage<OrganizationId> {
    type Error = AppError;

    fn try_from(request: GetOrganizationUsageRequest) -> AppResult<Self> {
        super::usage::usage_query(
            OrganizationId::parse("organization_id", &request.organization_id),
            request.start_time.as_ref(),
            request.end_time.as_ref(),
        )
    }
}

/// The caller becomes the new organization's owner in the same transaction.
pub async fn create_organization(
    state: &AppState,
    caller: &Caller,
    cmd: CreateOrganization,
) -> AppResult<OrganizationWithLimits> {
    let id = OrganizationId::generate();
    let new = &NewOrganization {
        id,
        name: cmd.name.into_inner(),
    };
    let owner = caller.person()?;
    let retry = cmd
        .request
        .as_ref()
        .map(|request| retries::request_key(caller, "CreateOrganization", request));
    let retry = retry.as_ref();
    let mut conn = state.db.conn().await?;
    let stale = Some(Invalidation::Organization(id));
    let organization = state
        .write(&mut conn, audit::actor(caller), stale, |conn| {
            async move {
                if let Some(key) = retry {
                    if let Some(first) = retries::claim(conn, key, None, Utc::now()).await? {
                        let id = OrganizationId::parse("id", &first.resource_id)
                            .map_err(|_| retries::deleted_since("organization"))?;
                        let organization = Organization::find(conn, id)
                            .await?
                            .ok_or_else(|| retries::deleted_since("organization"))?;
                        return Ok(Written::unrecorded(organization));
                    }
                    CreateRequest::created(conn, key, &id.to_string()).await?;
                }
                let organization = Organization::insert(conn, new).await?;
                Member::insert(conn, id, owner, OrgRole::Owner).await?;
                let record = AuditRecord::new(
                    AuditAction::OrganizationCreate,
                    AuditTarget::organization(id),
                )
                .with_state(state_of(OrganizationWithLimits {
                    organization: organization.clone(),
                    limits: None,
                }));
                Ok(Written::recorded(organization, record))
            }
            .scope_boxed()
        })
        .await?;
    tracing::info!(organization_id = %organization.id, "organization created");
    Ok(OrganizationWithLimits::load(&mut conn, organization).await?)
}

pub async fn get_organization(
    state: &AppState,
    caller: &Caller,
    id: OrganizationId,
) -> AppResult<OrganizationWithLimits> {
    let mut conn = state.db.conn().await?;
    let view = OrgAction::View;
    let organization =
        ownership::organization(&mut conn, &state.memberships, caller, id, view).await?;
    Ok(OrganizationWithLimits::load(&mut conn, organization).await?)
}

/// A user's own organizations; every organization for an admin.
pub async fn list_organizations(
    state: &AppState,
    caller: &Caller,
    page: PageRequest<OrganizationId>,
) -> AppResult<Page<OrganizationWithLimits>> {
    let mut conn = state.db.conn().await?;
    if let Some(account) = caller.service_account() {
        // A service account belongs to its one organization.
        let own = Organization::find(&mut conn, account.organization).await?;
        let first_page = page.after.is_none();
        let own: Vec<Organization> = own.into_iter().filter(|_| first_page).collect();
        return Ok(Page {
            items: OrganizationWithLimits::load_all(&mut conn, own).await?,
            next_page_token: String::new(),
        });
    }
    let member = caller.user_id().filter(|_| !caller.is_admin());
    let organizations = Organization::list(&mut conn, member, &page).await?;
    let page = page.page(organizations, Organization::cursor);
    Ok(Page {
        items: OrganizationWithLimits::load_all(&mut conn, page.items).await?,
        next_page_token: page.next_page_token,
    })
}

pub async fn update_organization(
    state: &AppState,
    caller: &Caller,
    cmd: UpdateOrganization,
) -> AppResult<OrganizationWithLimits> {
    let id = cmd.id;
    let mut conn = state.db.conn().await?;
    let manage = OrgAction::Manage;
    ownership::organization(&mut conn, &state.memberships, caller, id, manage).await?;
    let changes = &OrganizationChanges {
        name: cmd.name.map(OrganizationName::into_inner),
    };
    let mut changed = Vec::new();
    if changes.name.is_some() {
        changed.push(AuditChange::field("name"));
    }
    cmd.limits.changed_fields(&mut changed);
    let record = AuditRecord::new(
        AuditAction::OrganizationUpdate,
        AuditTarget::organization(id),
    )
    .with_changes(changed);
    // New limits apply to every key of the organization: every replica's
    // VerifyApiKey cache drops them.
    let limits_changed = cmd.limits != LimitsUpdate::default();
    let stale = limits_changed.then_some(Invalidation::Organization(id));
    let update = cmd.limits;
    let etag = cmd.etag;
    state
        .write(&mut conn, audit::actor(caller), stale, |conn| {
            async move {
                if let Some(etag) = etag {
                    // Under the organization's lock and its balance's (no
                    // spend between the check and the write).
                    if !Organization::lock(conn, id).await? {
                        return Err(AppError::NotFound("organization"));
                    }
                    OrganizationLimits::lock_many(conn, &[id]).await?;
                    let organization = Organization::find(conn, id)
                        .await?
                        .ok_or(AppError::NotFound("organization"))?;
                    let now = OrganizationWithLimits::load(conn, organization).await?;
                    if proto::Organization::from(now).etag != etag {
                        return Err(AppError::Aborted(
                            "the organization changed since its etag was read: read it again"
                                .into(),
                        ));
                    }
                }
                // The update locks the row: limit changes are serialised.
                let organization = Organization::update(conn, id, changes)
                    .await?
                    .ok_or(AppError::NotFound("organization"))?;
                if limits_changed {
                    // Locked: an addition is computed from the balance as
                    // it is, and no spend may write it in between.
                    let credits = match update.credits.depends_on_balance() {
                        true => OrganizationLimits::lock_many(conn, &[id])
                            .await?
                            .pop()
                            .and_then(|limits| limits.credits()),
                        false => None,
                    };
                    if update.credits.needs_balance() && credits.is_none() {
                        return Err(AppError::FailedPrecondition(
                            "the organization's credits are unlimited: set credits before \
                             adding to them or giving them a low threshold"
                                .into(),
                        ));
                    }
                    let limits = KeyLimitChanges::of_update(update, credits, Utc::now())?;
                    OrganizationLimits::apply(conn, id, &limits).await?;
                }
                let organization = OrganizationWithLimits::load(conn, organization).await?;
                let record = record.with_state(state_of(organization.clone()));
                Ok(Written::recorded(organization, record))
            }
            .scope_boxed()
        })
        .await
}

/// Only an organization that owns no chatbot: a chatbot created while this
/// runs either commits first (and the delete is refused by the chatbot's
/// foreign key) or fails to find the organization.
pub async fn delete_organization(
    state: &AppState,
    caller: &Caller,
    id: OrganizationId,
) -> AppResult<()> {
    let mut conn = state.db.conn().await?;
    let manage = OrgAction::Manage;
    let organization =
        ownership::organization(&mut conn, &state.memberships, caller, id, manage).await?;
    if organization.is_personal() {
        return Err(AppError::FailedPrecondition(
            "a personal organization goes with its user; delete the user instead".into(),
        ));
    }
    let still_owns_chatbots = || {
        AppError::FailedPrecondition(
            "the organization still owns chatbots; delete them first".into(),
        )
    };
    let record = AuditRecord::new(
        AuditAction::OrganizationDelete,
        AuditTarget::organization(id),
    );
    let stale = Some(Invalidation::Organization(id));
    state
        .write(&mut conn, audit::actor(caller), stale, |conn| {
            async move {
                if !Organization::lock(conn, id).await? {
                    return Err(AppError::NotFound("organization"));
                }
                if Organization::owns_chatbots(conn, id).await? {
                    return Err(still_owns_chatbots());
                }
                match Organization::delete(conn, id).await {
                    Ok(true) => Ok(Written::recorded((), record)),
                    Ok(false) => Err(AppError::NotFound("organization")),
                    Err(error) if is_foreign_key_violation(&error) => Err(still_owns_chatbots()),
                    Err(error) => Err(error.into()),
                }
            }
            .scope_boxed()
        })
        .await?;
    tracing::info!(organization_id = %id, "organization deleted");
    Ok(())
}

/// A member as its event carries it: every member may watch the events,
/// so the email is left out, as ListMembers leaves it out for a viewer.
fn member_state(member: MemberWithEmail) -> proto::event::Resource {
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
async fn organization_for_member_change(
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
    let manage = OrgAction::Manage;
    organization_for_member_change(&mut conn, state, caller, member.organization, manage).await?;
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
    let manage = OrgAction::Manage;
    organization_for_member_change(&mut conn, state, caller, cmd.organization, manage).await?;
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
                // A write first: SQLite cannot turn a transaction that
                // began with a read into a write while another connection
                // writes (it answers "locked" at once, without waiting).
                if !Organization::lock(conn, organization).await? {
                    return Err(AppError::NotFound("organization"));
                }
                // A retry answers first: the invitee may have joined since.
                if let Some(key) = retry {
                    if let Some(first) = retries::claim(conn, key, salt, now).await? {
                        let id = InvitationId::parse("id", &first.resource_id)
                            .map_err(|_| retries::deleted_since("invitation"))?;
                        let invitation = Invitation::find(conn, id)
                            .await?
                            .ok_or_else(|| retries::deleted_since("invitation"))?;
                        return Ok(Written::unrecorded((invitation, Some(first))));
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
    let (organization, manage) = (cmd.organization, OrgAction::Manage);
    let mut conn = state.db.conn().await?;
    ownership::organization(&mut conn, &state.memberships, caller, organization, manage).await?;
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
    let manage = OrgAction::Manage;
    let organization = ownership::authorize(
        Some(&mut conn),
        &state.memberships,
        caller,
        found,
        manage,
        "invitation",
    )
    .await?;
    let record = AuditRecord::new(
        AuditAction::InvitationDelete,
        AuditTarget::invitation(id, organization),
    );
    delete_row(
        state,
        &mut conn,
        Invalidation::Organization(organization),
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

pub async fn get_organization_usage(
    state: &AppState,
    caller: &Caller,
    cmd: GetUsage<OrganizationId>,
) -> AppResult<crate::db::models::HourlyUsage> {
    let mut conn = state.db.conn().await?;
    let view = OrgAction::View;
    ownership::organization(&mut conn, &state.memberships, caller, cmd.of, view).await?;
    Ok(KeyUsage::of_organization(&mut conn, cmd.of, cmd.range).await?)
}

impl From<OrganizationWithLimits> for proto::Organization {
    fn from(
        OrganizationWithLimits {
            organization: row,
            limits,
        }: OrganizationWithLimits,
    ) -> Self {
        let mut organization = proto::Organization {
            rate_limit: convert::rate_limit_message(limits.and_then(|l| l.rate_limit())),
            credits: convert::credits_message(
                limits.and_then(|l| l.credits()),
                limits.and_then(|l| l.low_threshold()),
            ),
            personal: row.is_personal(),
            id: row.id.to_string(),
            name: row.name,
            create_time: Some(timestamp(row.created_at)),
            update_time: Some(timestamp(row.updated_at)),
            etag: String::new(),
        };
        organization.etag = convert::organization_etag(&organization);
        organization
    }
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
