//! OrganizationService: organizations, their members and invitations, and
//! an organization's usage. Who may do what is [`OrgRole::allows`], asked
//! through [`ownership`]; every change to who belongs commits with an
//! [`Invalidation::Organization`], so it takes effect on every replica at
//! the next call. Each organization's member changes run under its row's
//! lock, so the last-owner rule holds against concurrent changes.

mod invitations;
mod members;
mod requests;

use invitations::{accept_invitation, create_invitation, delete_invitation, list_invitations};
use members::{list_members, remove_member, update_member};

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel_async::scoped_futures::ScopedFutureExt;
use tonic::Request;

use super::convert::{self, list_of, timestamp};
use super::events::state_of;
use super::{audit, retries, service_accounts, AppState, Rpc};
use crate::auth::{ownership, Caller};
use crate::db::models::{
    CreateRequest, KeyLimitChanges, KeyUsage, Member, NewOrganization, Organization,
    OrganizationChanges, OrganizationLimits, OrganizationWithLimits,
};
use crate::db::{is_foreign_key_violation, Invalidation, Written};
use crate::domain::{
    AuditAction, AuditChange, AuditRecord, AuditTarget, CreateInvitation, CreateOrganization,
    GetUsage, InvitationId, InvitationToken, LimitsUpdate, MemberRef, OrgAction, OrgRole,
    OrganizationId, OrganizationName, Page, PageRequest, ServiceAccountId, UpdateMember,
    UpdateOrganization, UserId,
};
use crate::error::{parsed, AppError, AppResult};
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
                        let organization = retries::first_created(
                            conn,
                            &first,
                            "organization",
                            OrganizationId::parse,
                            Organization::find,
                        );
                        return Ok(Written::unrecorded(organization.await?));
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
    ownership::managed_organization(&mut conn, &state.memberships, caller, id).await?;
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
    let organization =
        ownership::managed_organization(&mut conn, &state.memberships, caller, id).await?;
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
