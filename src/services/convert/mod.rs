//! Between proto messages and the service's own types: model rows to
//! resources, timestamps and durations both ways, update masks, roles, an
//! organization's list requests. The only place that knows both shapes.

mod limits;

pub use limits::{
    parse_credits, parse_limits_update, parse_rate_limit, parse_refill, LimitsRequest, LIMIT_PATHS,
};

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use crate::db::models;
use crate::domain::{
    self, CreditsState, KeyRateLimit, ListOf, OrgRole, OrganizationId, Page, PageRequest, RateUnit,
    Role, UsageCounts,
};
use crate::error::{parsed, AppResult, FieldViolation, Violations};
use crate::proto;

pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A client-sent timestamp, within the range google.protobuf.Timestamp
/// documents (years 1 to 9999), which both stores hold.
pub fn parse_timestamp(field: &str, value: &Timestamp) -> Result<DateTime<Utc>, FieldViolation> {
    domain::parse_timestamp_parts(field, value.seconds, value.nanos)
}

/// A client-sent non-negative duration, within the range
/// google.protobuf.Duration documents; never panics, whatever the numbers.
pub fn parse_duration(
    field: &str,
    value: &prost_types::Duration,
) -> Result<std::time::Duration, FieldViolation> {
    domain::parse_duration_parts(field, value.seconds, value.nanos)
}

/// [`mask_paths`] for an update that must change something: a mask naming
/// no field is itself a violation.
pub fn required_mask_paths<'a>(
    mask: Option<&'a prost_types::FieldMask>,
    updatable: &[&str],
    output_only: &[&str],
    violations: &mut Violations,
) -> Vec<&'a str> {
    let paths = mask_paths(mask, updatable, output_only, violations);
    if paths.is_empty() && mask.is_none_or(|m| m.paths.is_empty()) {
        violations.push(FieldViolation::new(
            "update_mask",
            "must name at least one field",
        ));
    }
    paths
}

/// The paths of an update mask, each checked against the fields an update
/// may change; output-only and unknown paths are INVALID_ARGUMENT.
pub fn mask_paths<'a>(
    mask: Option<&'a prost_types::FieldMask>,
    updatable: &[&str],
    output_only: &[&str],
    violations: &mut Violations,
) -> Vec<&'a str> {
    let paths: Vec<&str> = mask
        .map(|mask| mask.paths.iter().map(String::as_str).collect())
        .unwrap_or_default();
    paths
        .into_iter()
        .filter(|path| {
            if updatable.contains(path) {
                true
            } else if output_only.contains(path) {
                violations.push(FieldViolation::new(
                    "update_mask",
                    format!("{path:?} is output only"),
                ));
                false
            } else {
                violations.push(FieldViolation::new(
                    "update_mask",
                    format!("{path:?} is not an updatable field; use one of {updatable:?}"),
                ));
                false
            }
        })
        .collect()
}

impl From<Role> for proto::UserRole {
    fn from(role: Role) -> Self {
        match role {
            Role::User => proto::UserRole::User,
            Role::Admin => proto::UserRole::Admin,
        }
    }
}

impl From<models::User> for proto::User {
    fn from(row: models::User) -> Self {
        proto::User {
            id: row.id.to_string(),
            role: proto::UserRole::from(row.role()).into(),
            email: row.email,
            create_time: Some(timestamp(row.created_at)),
            update_time: Some(timestamp(row.updated_at)),
        }
    }
}

impl From<models::Chatbot> for proto::Chatbot {
    // owner_id stays filled in for the clients that still read it.
    #[allow(deprecated)]
    fn from(row: models::Chatbot) -> Self {
        proto::Chatbot {
            id: row.id.to_string(),
            organization_id: row.organization_id.to_string(),
            owner_id: row.owner_id.to_string(),
            name: row.name,
            llm_endpoint_url: row.llm_endpoint_url,
            create_time: Some(timestamp(row.created_at)),
            update_time: Some(timestamp(row.updated_at)),
        }
    }
}

/// Whose limit refused a call, as the API says it.
pub fn limit_scope_message(scope: Option<domain::LimitScope>) -> proto::LimitScope {
    match scope {
        None => proto::LimitScope::Unspecified,
        Some(domain::LimitScope::ApiKey) => proto::LimitScope::ApiKey,
        Some(domain::LimitScope::Organization) => proto::LimitScope::Organization,
    }
}

/// A rate limit as the API shows it.
pub fn rate_limit_message(limit: Option<KeyRateLimit>) -> Option<proto::RateLimit> {
    limit.map(|limit| proto::RateLimit {
        limit: i64::from(limit.calls()),
        window: prost_types::Duration::try_from(limit.window()).ok(),
        unit: match limit.unit() {
            RateUnit::Calls => proto::RateLimitUnit::Calls,
            RateUnit::Credits => proto::RateLimitUnit::Credits,
        }
        .into(),
    })
}

/// Credits as the API shows them: the balance now, refills included.
pub fn credits_message(
    credits: Option<CreditsState>,
    low_threshold: Option<i64>,
) -> Option<proto::Credits> {
    credits.map(|credits| {
        let (remaining, next_refill) = credits.as_of(Utc::now());
        proto::Credits {
            remaining,
            refill: credits.refill.map(|(refill, _)| proto::Refill {
                amount: refill.amount(),
                interval: prost_types::Duration::try_from(refill.interval()).ok(),
            }),
            next_refill_time: next_refill.map(timestamp),
            low_threshold: low_threshold.unwrap_or(0),
        }
    })
}

/// An etag (AIP-154): a digest of what a resource shows, as `shown` encodes
/// it (without what changes by itself, such as a last-use time), and of
/// `entries` (a map's, sorted: protobuf's encoding of a map has no order).
fn etag(shown: &impl prost::Message, entries: &[(&String, &String)]) -> String {
    let digest = digest_of(shown, entries);
    base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        &digest[..12],
    )
}

/// SHA-256 of a message as it encodes, and of `entries` (a map's, sorted:
/// protobuf's encoding of a map has no order).
fn digest_of(shown: &impl prost::Message, entries: &[(&String, &String)]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    digest.update(shown.encode_to_vec());
    let mut entries = entries.to_vec();
    entries.sort();
    for (key, value) in entries {
        for part in [key, value] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part.as_bytes());
        }
    }
    digest.finalize().into()
}

/// A create's `request_id` (AIP-155), empty for none, with the digest of
/// the rest of the request: `rest` is the request with its request_id
/// (and any map) cleared, `entries` the map's.
pub fn create_request_id(
    request_id: &str,
    rest: &impl prost::Message,
    entries: &[(&String, &String)],
) -> Result<Option<domain::CreateRequestId>, FieldViolation> {
    if request_id.is_empty() {
        return Ok(None);
    }
    let id = uuid::Uuid::parse_str(request_id)
        .ok()
        .filter(|id| !id.is_nil())
        .map(domain::CreateRequestUuid)
        .ok_or_else(|| FieldViolation::new("request_id", "must be a UUID"))?;
    Ok(Some(domain::CreateRequestId {
        id,
        digest: digest_of(rest, entries),
    }))
}

/// A key's etag: of the key as shown, less its last use and the next
/// refill's time (which change without anyone changing the key).
pub fn api_key_etag(key: &proto::ApiKey) -> String {
    let mut shown = proto::ApiKey {
        etag: String::new(),
        last_used_time: None,
        metadata: Default::default(),
        ..key.clone()
    };
    if let Some(credits) = shown.credits.as_mut() {
        credits.next_refill_time = None;
    }
    etag(&shown, &key.metadata.iter().collect::<Vec<_>>())
}

/// An organization's etag: of the organization as shown, less the next
/// refill's time.
pub fn organization_etag(organization: &proto::Organization) -> String {
    let mut shown = proto::Organization {
        etag: String::new(),
        ..organization.clone()
    };
    if let Some(credits) = shown.credits.as_mut() {
        credits.next_refill_time = None;
    }
    etag(&shown, &[])
}

/// The etag a conditional update names, if any: empty means none.
pub fn requested_etag(etag: String) -> Option<String> {
    (!etag.is_empty()).then_some(etag)
}

impl From<models::KeyWithLimits> for proto::ApiKey {
    fn from(models::KeyWithLimits { key: row, limits }: models::KeyWithLimits) -> Self {
        let rate_limit = limits.and_then(|limits| limits.rate_limit());
        let credits = limits.and_then(|limits| limits.credits());
        let low_threshold = limits.and_then(|limits| limits.low_threshold());
        let grants = row.grants();
        let mut key = proto::ApiKey {
            rate_limit: rate_limit_message(rate_limit),
            credits: credits_message(credits, low_threshold),
            allowed_networks: grants.networks.to_strings(),
            permissions: grants
                .permissions
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            metadata: grants
                .metadata
                .entries()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            external_id: grants.external_id.clone().unwrap_or_default(),
            id: row.id.0,
            chatbot_id: row.chatbot_id.to_string(),
            display_name: row.display_name,
            key_prefix: row.key_prefix,
            revoked: row.revoked,
            create_time: Some(timestamp(row.created_at)),
            expire_time: row.expires_at.map(timestamp),
            revoke_time: row.revoked_at.map(timestamp),
            last_used_time: row.last_used_at.map(timestamp),
            etag: String::new(),
        };
        key.etag = api_key_etag(&key);
        key
    }
}

/// Converts every row of a list.
pub fn all<T, P: From<T>>(rows: Vec<T>) -> Vec<P> {
    rows.into_iter().map(P::from).collect()
}

/// Responses that carry one resource: `Response.field <- Source`.
macro_rules! resource_responses {
    ($($response:ident . $field:ident <- $source:ty),* $(,)?) => {$(
        impl From<$source> for proto::$response {
            fn from(source: $source) -> Self {
                Self { $field: Some(source.into()) }
            }
        }
    )*};
}

resource_responses! {
    CreateUserResponse.user <- models::User,
    GetUserResponse.user <- models::User,
    UpdateUserResponse.user <- models::User,
    GetCurrentUserResponse.user <- models::User,
    CreateChatbotResponse.chatbot <- models::Chatbot,
    GetChatbotResponse.chatbot <- models::Chatbot,
    UpdateChatbotResponse.chatbot <- models::Chatbot,
    GetApiKeyResponse.api_key <- models::KeyWithLimits,
    RevokeApiKeyResponse.api_key <- models::KeyWithLimits,
    UpdateApiKeyResponse.api_key <- models::KeyWithLimits,
    CreateOrganizationResponse.organization <- models::OrganizationWithLimits,
    GetOrganizationResponse.organization <- models::OrganizationWithLimits,
    UpdateOrganizationResponse.organization <- models::OrganizationWithLimits,
    RevokeServiceAccountResponse.service_account <- models::ServiceAccount,
}

/// List responses: `Response.items_field <- Row`, with the page token.
macro_rules! page_responses {
    ($($response:ident . $field:ident <- $row:ty),* $(,)?) => {$(
        impl From<Page<$row>> for proto::$response {
            fn from(page: Page<$row>) -> Self {
                Self { $field: all(page.items), next_page_token: page.next_page_token }
            }
        }
    )*};
}

page_responses! {
    ListUsersResponse.users <- models::User,
    ListChatbotsResponse.chatbots <- models::Chatbot,
    ListApiKeysResponse.api_keys <- models::KeyWithLimits,
    ListAuditEventsResponse.audit_events <- models::AuditEvent,
    ListOrganizationsResponse.organizations <- models::OrganizationWithLimits,
    ListInvitationsResponse.invitations <- models::Invitation,
    ListServiceAccountsResponse.service_accounts <- models::ServiceAccount,
}

/// Responses with no fields, to operations that return nothing.
macro_rules! empty_responses {
    ($($response:ident),* $(,)?) => {$(
        impl From<()> for proto::$response {
            fn from((): ()) -> Self {
                Self {}
            }
        }
    )*};
}

empty_responses!(
    DeleteUserResponse,
    DeleteOrganizationResponse,
    RemoveMemberResponse,
    DeleteInvitationResponse,
    DeleteServiceAccountResponse,
    DeleteChatbotResponse,
    DeleteApiKeyResponse,
    LogoutResponse
);

impl From<UsageCounts> for proto::UsageCounts {
    fn from(counts: UsageCounts) -> Self {
        use domain::UsageCounter;

        let mut message = Self::default();
        for (counter, value) in counts.iter() {
            // Every counter has its field: a new one fails to compile here.
            let field = match counter {
                UsageCounter::Valid => &mut message.valid,
                UsageCounter::Revoked => &mut message.revoked,
                UsageCounter::Expired => &mut message.expired,
                UsageCounter::RateLimited => &mut message.rate_limited,
                UsageCounter::UsageExceeded => &mut message.usage_exceeded,
                UsageCounter::CreditsSpent => &mut message.credits_spent,
                UsageCounter::AddressNotAllowed => &mut message.address_not_allowed,
                UsageCounter::InsufficientPermissions => &mut message.insufficient_permissions,
                UsageCounter::CreditsReserved => &mut message.credits_reserved,
                UsageCounter::CreditsSettled => &mut message.credits_settled,
                UsageCounter::CreditsRefunded => &mut message.credits_refunded,
                UsageCounter::CreditsExpired => &mut message.credits_expired,
            };
            *field = value;
        }
        message
    }
}

/// Usage responses: the hours with their counts, and their total.
macro_rules! usage_responses {
    ($($response:ident),* $(,)?) => {$(
        impl From<models::HourlyUsage> for proto::$response {
            fn from(hours: models::HourlyUsage) -> Self {
                let mut total = UsageCounts::default();
                let buckets = hours
                    .into_iter()
                    .map(|(hour, counts)| {
                        total.add(&counts);
                        proto::UsageBucket {
                            start_time: Some(timestamp(hour)),
                            counts: Some(counts.into()),
                        }
                    })
                    .collect();
                Self { buckets, total: Some(total.into()) }
            }
        }
    )*};
}

usage_responses!(
    GetApiKeyUsageResponse,
    GetChatbotUsageResponse,
    GetOrganizationUsageResponse,
);

/// A role a request sets; UNSPECIFIED (or unknown) is a violation.
pub fn parse_role(field: &str, value: i32) -> Result<OrgRole, FieldViolation> {
    match proto::OrganizationRole::try_from(value) {
        Ok(proto::OrganizationRole::Owner) => Ok(OrgRole::Owner),
        Ok(proto::OrganizationRole::Editor) => Ok(OrgRole::Editor),
        Ok(proto::OrganizationRole::Viewer) => Ok(OrgRole::Viewer),
        Ok(proto::OrganizationRole::Unspecified) => Err(FieldViolation::new(field, "is required")),
        Err(_) => Err(FieldViolation::new(field, "is not a known role")),
    }
}

/// A role as the API names it.
pub fn role_message(role: OrgRole) -> proto::OrganizationRole {
    match role {
        OrgRole::Owner => proto::OrganizationRole::Owner,
        OrgRole::Editor => proto::OrganizationRole::Editor,
        OrgRole::Viewer => proto::OrganizationRole::Viewer,
    }
}

/// One organization's list; the page token is bound to the organization.
pub fn list_of<K: std::str::FromStr + std::fmt::Display>(
    what: &str,
    organization_id: &str,
    page_size: i32,
    page_token: &str,
) -> AppResult<ListOf<K>> {
    let filter = format!("{what}|organization={organization_id}");
    let (organization, page) = parsed((
        OrganizationId::parse("organization_id", organization_id),
        PageRequest::parse(page_size, page_token, &filter),
    ))?;
    Ok(ListOf { organization, page })
}
