//! Request values parsed at the edge into types that cannot hold bad data.
//! Past a handler's first line nothing re-checks strings.

mod api_key_rules;
mod api_key_secret;
mod audit;
mod chatbot;
mod commands;
mod display_text;
mod email;
mod field_violation;
mod ids;
mod key_limits;
mod key_restrictions;
mod organization;
mod paging;
mod password;
mod public_host;
mod role;
mod secret_token;
mod time_range;
mod usage;
mod webhook_signing;

pub use api_key_rules::{
    may_add_active_key, may_rotate_with_grace, CreditsEdit, KeyLifecycle, Precondition,
};
pub use api_key_secret::{ApiKeyDigest, ApiKeySecret, API_KEY_PREFIX};
pub use audit::{
    AuditAction, AuditChange, AuditFilter, AuditRecord, AuditTarget, AuditViewer, ListAuditEvents,
    ResourceState, TargetType,
};
pub use chatbot::{url_origin, ChatbotName, LlmEndpoint};
pub use commands::{
    ApiKeyFilter, CreateApiKey, CreateChatbot, CreateInvitation, CreateOrganization,
    CreateRequestId, CreateUser, CreditsChange, GetUsage, LimitsUpdate, ListApiKeys, ListChatbots,
    ListOf, Login, MemberRef, ReleaseReservation, RotateApiKey, SettleReservation, UpdateApiKey,
    UpdateChatbot, UpdateMember, UpdateOrganization, UpdateUser, VerifyApiKey,
};
pub use display_text::DisplayText;
pub use email::Email;
pub use field_violation::FieldViolation;
pub use ids::{
    ApiKeyId, ChatbotId, CreateRequestUuid, EventId, InvitationId, OrganizationId, RefreshTokenId,
    ReplicaId, ServiceAccountId, SessionId, UserId, WebhookDeliveryId, WebhookId,
};
pub use key_limits::{
    parse_actual_cost, parse_balance, parse_cost, parse_credits_to_add, parse_low_threshold,
    CreditNotices, CreditsSetting, CreditsState, KeyRateLimit, LimitScope, RateUnit, Refill,
    MAX_COST,
};
pub use key_restrictions::{
    missing_permissions, parse_client_address, parse_external_id, parse_permissions,
    permissions_json, AllowedNetworks, KeyGrants, Metadata, Permission,
};
pub use organization::{keeps_an_owner, may_change_members, OrgAction, OrgRole, OrganizationName};
pub use paging::{Page, PageCursor, PageRequest};
pub use password::Password;
pub use public_host::non_public_address_reason;
pub use role::Role;
pub use secret_token::{
    digest as token_digest, InvitationToken, ReservationToken, SecretToken, ServiceAccountToken,
    TokenKind,
};
pub use time_range::{
    parse_duration_parts, parse_timestamp_parts, MAX_TIMESTAMP_SECONDS, MIN_TIMESTAMP_SECONDS,
};
pub use usage::{
    hour_of, ReservationEvent, UsageCounter, UsageCounts, UsageEvent, UsageRange,
    MAX_USAGE_RANGE_HOURS,
};
pub use webhook_signing::{WebhookSecret, WebhookSigner};
