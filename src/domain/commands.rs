//! What each RPC that carries more than an id asks for, in parsed domain
//! types: the edge (`crate::services`) builds these from the requests,
//! collecting every field violation, and the operations take nothing else.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    AllowedNetworks, ApiKeyId, ApiKeySecret, AuditChange, ChatbotId, ChatbotName, CreditsSetting,
    DisplayText, Email, FieldViolation, KeyGrants, KeyRateLimit, LlmEndpoint, Metadata, OrgRole,
    OrganizationId, OrganizationName, PageRequest, Password, Permission, Refill, ReservationToken,
    Role, UsageRange, UserId,
};

/// CreateUser: sign-up, or an admin creating a user.
#[derive(Debug)]
pub struct CreateUser {
    pub email: Email,
    pub password: Password,
    pub role: Role,
}

/// UpdateUser: the fields the update mask named, and a password change.
#[derive(Debug)]
pub struct UpdateUser {
    pub id: UserId,
    pub email: Option<Email>,
    pub role: Option<Role>,
    pub new_password: Option<Password>,
    /// Needed only when callers change their own password, so a missing or
    /// unusable one is reported only then.
    pub current_password: Result<Password, FieldViolation>,
}

/// CreateChatbot: the organization that gets it (a personal one when the
/// request named an owner, or nothing).
#[derive(Debug)]
pub struct CreateChatbot {
    pub organization: OrganizationId,
    pub name: ChatbotName,
    pub endpoint: LlmEndpoint,
    pub request: Option<CreateRequestId>,
}

/// A create's `request_id` (AIP-155), with a digest of the rest of the
/// request: a retry must be the same request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequestId {
    pub id: super::CreateRequestUuid,
    pub digest: [u8; 32],
}

/// CreateOrganization.
#[derive(Debug)]
pub struct CreateOrganization {
    pub name: super::OrganizationName,
    pub request: Option<CreateRequestId>,
}

/// ListChatbots: every filter given applies; a user (not an admin) sees
/// only the organizations they belong to.
#[derive(Debug)]
pub struct ListChatbots {
    pub organization: Option<OrganizationId>,
    pub owner: Option<UserId>,
    pub page: PageRequest<ChatbotId>,
}

/// UpdateChatbot: the fields the update mask named.
#[derive(Debug)]
pub struct UpdateChatbot {
    pub id: ChatbotId,
    pub name: Option<ChatbotName>,
    pub endpoint: Option<LlmEndpoint>,
}

/// CreateApiKey.
#[derive(Debug)]
pub struct CreateApiKey {
    pub chatbot_id: ChatbotId,
    pub display_name: DisplayText,
    pub expires_at: Option<DateTime<Utc>>,
    pub rate_limit: Option<KeyRateLimit>,
    pub credits: Option<CreditsSetting>,
    /// Its networks, permissions, metadata and external id.
    pub grants: KeyGrants,
    pub request: Option<CreateRequestId>,
}

/// UpdateApiKey: the fields its mask names (`Some`), each with its new
/// value (`None` inside clears it).
#[derive(Debug)]
pub struct UpdateApiKey {
    pub id: ApiKeyId,
    pub display_name: Option<DisplayText>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub limits: LimitsUpdate,
    pub networks: Option<AllowedNetworks>,
    pub permissions: Option<Vec<Permission>>,
    pub metadata: Option<Metadata>,
    pub external_id: Option<Option<String>>,
    /// Only if the key still has this etag.
    pub etag: Option<String>,
}

impl UpdateApiKey {
    /// The fields it changes, by their API names, for the audit log: the
    /// new balance of a top-up, the others by name.
    pub fn changed_fields(&self) -> Vec<AuditChange> {
        let mut changed = Vec::new();
        if self.display_name.is_some() {
            changed.push(AuditChange::field("display_name"));
        }
        if self.expires_at.is_some() {
            changed.push(AuditChange::field("expire_time"));
        }
        self.limits.changed_fields(&mut changed);
        for (field, named) in [
            ("allowed_networks", self.networks.is_some()),
            ("permissions", self.permissions.is_some()),
            ("metadata", self.metadata.is_some()),
            ("external_id", self.external_id.is_some()),
        ] {
            if named {
                changed.push(AuditChange::field(field));
            }
        }
        changed
    }
}

/// What an update does to a rate limit and credits (a key's or an
/// organization's): the rate limit if its mask names it (`None` inside
/// clears it), and the credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsUpdate {
    pub rate_limit: Option<Option<KeyRateLimit>>,
    pub credits: CreditsChange,
}

impl Default for LimitsUpdate {
    fn default() -> Self {
        Self {
            rate_limit: None,
            credits: CreditsChange::Unchanged,
        }
    }
}

impl LimitsUpdate {
    /// The fields it changes, for the audit log: the new balance of a
    /// top-up, the others by name.
    pub fn changed_fields(&self, changed: &mut Vec<AuditChange>) {
        if self.rate_limit.is_some() {
            changed.push(AuditChange::field("rate_limit"));
        }
        match self.credits {
            CreditsChange::Unchanged => {}
            CreditsChange::Replace(_) => changed.push(AuditChange::field("credits")),
            CreditsChange::Balance(remaining) => changed.push(AuditChange {
                field: "credits.remaining".into(),
                old: None,
                new: Some(remaining.to_string()),
            }),
            CreditsChange::Refill(_) => changed.push(AuditChange::field("credits.refill")),
            CreditsChange::Add(amount) => changed.push(AuditChange {
                field: "credits_to_add".into(),
                old: None,
                new: Some(amount.to_string()),
            }),
            CreditsChange::LowThreshold(threshold) => changed.push(AuditChange {
                field: "credits.low_threshold".into(),
                old: None,
                new: Some(threshold.unwrap_or(0).to_string()),
            }),
        }
    }
}

/// What UpdateApiKey does to a key's credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditsChange {
    Unchanged,
    /// `credits`: the balance and the refill; `None` makes the key unlimited.
    Replace(Option<CreditsSetting>),
    /// `credits.remaining`: the balance only (a top-up).
    Balance(i64),
    /// `credits.refill`: the refill only; `None` stops refilling.
    Refill(Option<Refill>),
    /// `credits.low_threshold`: the low threshold only; `None` removes it.
    LowThreshold(Option<i64>),
    /// `credits_to_add`: this many credits more, atomically with spends.
    Add(i64),
}

/// Which of a chatbot's keys ListApiKeys returns.
#[derive(Debug, Clone)]
pub struct ApiKeyFilter {
    pub chatbot_id: ChatbotId,
    pub show_revoked: bool,
    pub expire_before: Option<DateTime<Utc>>,
    pub external_id: Option<String>,
}

/// ListApiKeys.
#[derive(Debug)]
pub struct ListApiKeys {
    pub filter: ApiKeyFilter,
    pub page: PageRequest<ApiKeyId>,
}

/// RotateApiKey: how long the replaced key keeps working.
#[derive(Debug)]
pub struct RotateApiKey {
    pub id: ApiKeyId,
    pub grace_period: Duration,
    pub request: Option<CreateRequestId>,
}

/// VerifyApiKey. A string that cannot be one of our keys is an answer
/// (not valid: malformed), not an error, so it is kept as `None`.
#[derive(Debug)]
pub struct VerifyApiKey {
    pub secret: Option<ApiKeySecret>,
    /// What the call spends from the key's credits (at least 1).
    pub cost: i64,
    /// The end client's address, as the caller saw it.
    pub client_address: Option<std::net::IpAddr>,
    /// What the call needs the key to grant.
    pub required_permissions: Vec<Permission>,
    /// Hold `cost` as a reservation, settled later, instead of spending it.
    pub reserve: bool,
}

/// SettleReservation. A malformed id is answered like an unknown one
/// (NOT_FOUND), so it is kept as `None`.
#[derive(Debug)]
pub struct SettleReservation {
    pub reservation: Option<ReservationToken>,
    /// What the call really cost.
    pub actual_cost: i64,
}

/// ReleaseReservation; a malformed id is `None`, as in [`SettleReservation`].
#[derive(Debug)]
pub struct ReleaseReservation {
    pub reservation: Option<ReservationToken>,
}

/// Login.
#[derive(Debug)]
pub struct Login {
    pub email: Email,
    pub password: Password,
}

/// GetApiKeyUsage and GetChatbotUsage: whose usage, over which hours.
#[derive(Debug)]
pub struct GetUsage<T> {
    pub of: T,
    pub range: UsageRange,
}

/// UpdateOrganization: the fields its mask names.
#[derive(Debug)]
pub struct UpdateOrganization {
    pub id: OrganizationId,
    pub name: Option<OrganizationName>,
    pub limits: LimitsUpdate,
    /// Only if the organization still has this etag.
    pub etag: Option<String>,
}

/// One member of one organization (RemoveMember).
#[derive(Debug, Clone, Copy)]
pub struct MemberRef {
    pub organization: OrganizationId,
    pub user: UserId,
}

/// UpdateMember: the member's new role.
#[derive(Debug)]
pub struct UpdateMember {
    pub member: MemberRef,
    pub role: OrgRole,
}

/// CreateInvitation.
#[derive(Debug)]
pub struct CreateInvitation {
    pub organization: OrganizationId,
    pub email: Email,
    pub role: OrgRole,
    pub ttl: Duration,
    pub request: Option<CreateRequestId>,
}

/// ListMembers and ListInvitations: one organization's, one page.
#[derive(Debug)]
pub struct ListOf<K> {
    pub organization: OrganizationId,
    pub page: PageRequest<K>,
}
