//! OrganizationService's requests parsed into the domain's commands, every
//! bad field named.

use super::{DEFAULT_INVITATION_TTL, MAX_INVITATION_TTL, MIN_INVITATION_TTL};
use crate::domain::{
    CreateInvitation, Email, GetUsage, MemberRef, OrganizationId, OrganizationName, UpdateMember,
    UpdateOrganization, UserId,
};
use crate::error::{parsed, AppError, AppResult, FieldViolation, Violations};
use crate::proto::{
    CreateInvitationRequest, GetOrganizationUsageRequest, UpdateMemberRequest,
    UpdateOrganizationRequest,
};
use crate::services::convert::{self, mask_paths, parse_role};
use crate::services::required;

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
        crate::services::usage::usage_query(
            OrganizationId::parse("organization_id", &request.organization_id),
            request.start_time.as_ref(),
            request.end_time.as_ref(),
        )
    }
}
