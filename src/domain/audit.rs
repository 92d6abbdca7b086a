//! The audit log's values: what an event records, and what a listing asks
//! for. Events are written by the operations that make the changes, in
//! their own transactions.

use std::fmt;

use chrono::{DateTime, Utc};

use super::{
    ApiKeyId, ChatbotId, FieldViolation, InvitationId, OrganizationId, PageRequest,
    ServiceAccountId, UserId, WebhookId,
};

/// What happened. The names are part of the API (ListAuditEvents returns
/// and filters by them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    UserCreate,
    UserUpdate,
    UserRoleChange,
    UserPasswordChange,
    UserDelete,
    SessionLogin,
    SessionLogout,
    SessionRefreshReuse,
    SessionLoginFailed,
    PermissionDenied,
    ChatbotCreate,
    ChatbotUpdate,
    ChatbotDelete,
    ApiKeyCreate,
    ApiKeyUpdate,
    ApiKeyRevoke,
    ApiKeyRotate,
    ApiKeyDelete,
    OrganizationCreate,
    OrganizationUpdate,
    OrganizationDelete,
    MemberJoin,
    MemberRoleChange,
    MemberRemove,
    InvitationCreate,
    InvitationDelete,
    ServiceAccountCreate,
    ServiceAccountRevoke,
    ServiceAccountDelete,
    WebhookCreate,
    WebhookUpdate,
    WebhookDelete,
    /// The service disabled a webhook whose endpoint kept failing.
    WebhookDisable,
    /// The service saw a key's expiry come within KEY_EXPIRY_NOTICE_HOURS.
    ApiKeyExpiring,
    /// The service saw a key's credits fall to their low threshold.
    ApiKeyCreditsLow,
    /// The service saw a key's credits run out.
    ApiKeyCreditsExhausted,
    /// The service saw an organization's credits fall to their low
    /// threshold.
    OrganizationCreditsLow,
    /// The service saw an organization's credits run out.
    OrganizationCreditsExhausted,
}

impl AuditAction {
    pub const ALL: [AuditAction; 38] = [
        Self::UserCreate,
        Self::UserUpdate,
        Self::UserRoleChange,
        Self::UserPasswordChange,
        Self::UserDelete,
        Self::SessionLogin,
        Self::SessionLogout,
        Self::SessionRefreshReuse,
        Self::SessionLoginFailed,
        Self::PermissionDenied,
        Self::ChatbotCreate,
        Self::ChatbotUpdate,
        Self::ChatbotDelete,
        Self::ApiKeyCreate,
        Self::ApiKeyUpdate,
        Self::ApiKeyRevoke,
        Self::ApiKeyRotate,
        Self::ApiKeyDelete,
        Self::OrganizationCreate,
        Self::OrganizationUpdate,
        Self::OrganizationDelete,
        Self::MemberJoin,
        Self::MemberRoleChange,
        Self::MemberRemove,
        Self::InvitationCreate,
        Self::InvitationDelete,
        Self::ServiceAccountCreate,
        Self::ServiceAccountRevoke,
        Self::ServiceAccountDelete,
        Self::WebhookCreate,
        Self::WebhookUpdate,
        Self::WebhookDelete,
        Self::WebhookDisable,
        Self::ApiKeyExpiring,
        Self::ApiKeyCreditsLow,
        Self::ApiKeyCreditsExhausted,
        Self::OrganizationCreditsLow,
        Self::OrganizationCreditsExhausted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::UserCreate => "user.create",
            Self::UserUpdate => "user.update",
            Self::UserRoleChange => "user.role_change",
            Self::UserPasswordChange => "user.password_change",
            Self::UserDelete => "user.delete",
            Self::SessionLogin => "session.login",
            Self::SessionLogout => "session.logout",
            Self::SessionRefreshReuse => "session.refresh_reuse",
            Self::SessionLoginFailed => "session.login_failed",
            Self::PermissionDenied => "rpc.permission_denied",
            Self::ChatbotCreate => "chatbot.create",
            Self::ChatbotUpdate => "chatbot.update",
            Self::ChatbotDelete => "chatbot.delete",
            Self::ApiKeyCreate => "api_key.create",
            Self::ApiKeyUpdate => "api_key.update",
            Self::ApiKeyRevoke => "api_key.revoke",
            Self::ApiKeyRotate => "api_key.rotate",
            Self::ApiKeyDelete => "api_key.delete",
            Self::OrganizationCreate => "organization.create",
            Self::OrganizationUpdate => "organization.update",
            Self::OrganizationDelete => "organization.delete",
            Self::MemberJoin => "member.join",
            Self::MemberRoleChange => "member.role_change",
            Self::MemberRemove => "member.remove",
            Self::InvitationCreate => "invitation.create",
            Self::InvitationDelete => "invitation.delete",
            Self::ServiceAccountCreate => "service_account.create",
            Self::ServiceAccountRevoke => "service_account.revoke",
            Self::ServiceAccountDelete => "service_account.delete",
            Self::WebhookCreate => "webhook.create",
            Self::WebhookUpdate => "webhook.update",
            Self::WebhookDelete => "webhook.delete",
            Self::WebhookDisable => "webhook.disable",
            Self::ApiKeyExpiring => "api_key.expiring",
            Self::ApiKeyCreditsLow => "api_key.credits_low",
            Self::ApiKeyCreditsExhausted => "api_key.credits_exhausted",
            Self::OrganizationCreditsLow => "organization.credits_low",
            Self::OrganizationCreditsExhausted => "organization.credits_exhausted",
        }
    }

    pub fn parse(field: &str, name: &str) -> Result<Self, FieldViolation> {
        Self::ALL
            .into_iter()
            .find(|action| action.name() == name)
            .ok_or_else(|| FieldViolation::new(field, "is not an audited action"))
    }
}

/// The kinds of thing an action is done to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetType {
    User,
    Chatbot,
    ApiKey,
    Organization,
    /// A membership, named by the member's user id.
    Member,
    Invitation,
    ServiceAccount,
    Webhook,
    /// A call refused as a whole, named by its RPC.
    Rpc,
}

impl TargetType {
    pub fn name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Chatbot => "chatbot",
            Self::ApiKey => "api_key",
            Self::Organization => "organization",
            Self::Member => "member",
            Self::Invitation => "invitation",
            Self::ServiceAccount => "service_account",
            Self::Webhook => "webhook",
            Self::Rpc => "rpc",
        }
    }

    pub fn parse(field: &str, name: &str) -> Result<Self, FieldViolation> {
        [
            Self::User,
            Self::Chatbot,
            Self::ApiKey,
            Self::Organization,
            Self::Member,
            Self::Invitation,
            Self::ServiceAccount,
            Self::Webhook,
            Self::Rpc,
        ]
        .into_iter()
        .find(|kind| kind.name() == name)
        .ok_or_else(|| {
            FieldViolation::new(
                field,
                "must be user, chatbot, api_key, organization, member, invitation, \
                 service_account, webhook or rpc",
            )
        })
    }
}

/// What an action is done to, who owns it and the organization it belongs
/// to (who may see the event: the owner and the organization's members;
/// nobody but admins when neither is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditTarget {
    pub kind: TargetType,
    pub id: String,
    pub owner: Option<UserId>,
    pub organization: Option<OrganizationId>,
}

impl AuditTarget {
    /// A user's account (which the user owns).
    pub fn user(id: UserId) -> Self {
        Self {
            kind: TargetType::User,
            id: id.to_string(),
            owner: Some(id),
            organization: None,
        }
    }

    /// The account an email names, if there is one; else an unknown
    /// account (the email itself is not kept: anyone can send any).
    pub fn account(user: Option<UserId>) -> Self {
        match user {
            Some(id) => Self::user(id),
            None => Self {
                kind: TargetType::User,
                id: String::new(),
                owner: None,
                organization: None,
            },
        }
    }

    /// An RPC, refused as a whole.
    pub fn rpc(name: &str) -> Self {
        Self {
            kind: TargetType::Rpc,
            id: name.to_owned(),
            owner: None,
            organization: None,
        }
    }

    /// A chatbot, with its owner_id and organization.
    pub fn chatbot(id: ChatbotId, owner: UserId, organization: OrganizationId) -> Self {
        Self {
            kind: TargetType::Chatbot,
            id: id.to_string(),
            owner: Some(owner),
            organization: Some(organization),
        }
    }

    /// An API key, with its chatbot's owner_id and organization.
    pub fn api_key(id: ApiKeyId, owner: UserId, organization: OrganizationId) -> Self {
        Self {
            kind: TargetType::ApiKey,
            id: id.to_string(),
            owner: Some(owner),
            organization: Some(organization),
        }
    }

    pub fn organization(id: OrganizationId) -> Self {
        Self {
            kind: TargetType::Organization,
            id: id.to_string(),
            owner: None,
            organization: Some(id),
        }
    }

    /// A membership: the member is its owner (they see it as theirs).
    pub fn member(organization: OrganizationId, user: UserId) -> Self {
        Self {
            kind: TargetType::Member,
            id: user.to_string(),
            owner: Some(user),
            organization: Some(organization),
        }
    }

    pub fn service_account(id: ServiceAccountId, organization: OrganizationId) -> Self {
        Self {
            kind: TargetType::ServiceAccount,
            id: id.to_string(),
            owner: None,
            organization: Some(organization),
        }
    }

    pub fn invitation(id: InvitationId, organization: OrganizationId) -> Self {
        Self {
            kind: TargetType::Invitation,
            id: id.to_string(),
            owner: None,
            organization: Some(organization),
        }
    }

    pub fn webhook(id: WebhookId, organization: OrganizationId) -> Self {
        Self {
            kind: TargetType::Webhook,
            id: id.to_string(),
            owner: None,
            organization: Some(organization),
        }
    }
}

/// One changed field, by its API name, with its values where the action
/// records them (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditChange {
    pub field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
}

impl AuditChange {
    /// A field that changed, without its values.
    pub fn field(field: &str) -> Self {
        Self {
            field: field.to_owned(),
            old: None,
            new: None,
        }
    }

    /// A field that changed from `old` to `new`.
    pub fn values(field: &str, old: impl fmt::Display, new: impl fmt::Display) -> Self {
        Self {
            field: field.to_owned(),
            old: Some(old.to_string()),
            new: Some(new.to_string()),
        }
    }
}

/// An event to record: the action, its target, what it changed and, for
/// the organization's event of it, the target as the change left it.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub action: AuditAction,
    pub target: AuditTarget,
    pub changes: Vec<AuditChange>,
    pub state: Option<ResourceState>,
}

/// A resource as a change left it, encoded by the services layer in the
/// public contract's terms (the store keeps the bytes as they are). Never
/// holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceState(pub Vec<u8>);

impl AuditRecord {
    pub fn new(action: AuditAction, target: AuditTarget) -> Self {
        Self {
            action,
            target,
            changes: Vec::new(),
            state: None,
        }
    }

    pub fn with_changes(mut self, changes: Vec<AuditChange>) -> Self {
        self.changes = changes;
        self
    }

    pub fn with_state(mut self, state: ResourceState) -> Self {
        self.state = Some(state);
        self
    }
}

/// Which events a listing asks for.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<AuditAction>,
    pub actor: Option<UserId>,
    pub target_type: Option<TargetType>,
    pub target_id: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// Only events in this organization.
    pub organization: Option<OrganizationId>,
    /// Whose view of the log this is.
    pub viewer: AuditViewer,
}

/// Who reads the audit log, which decides what they may see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuditViewer {
    /// An admin: every event.
    #[default]
    Admin,
    /// Events on what this user owns or in the organizations they belong
    /// to, done by them or succeeded.
    User(UserId),
    /// Events in the service account's organization, done by it or
    /// succeeded.
    ServiceAccount {
        id: ServiceAccountId,
        organization: OrganizationId,
    },
}

/// ListAuditEvents.
#[derive(Debug)]
pub struct ListAuditEvents {
    pub filter: AuditFilter,
    pub page: PageRequest<i64>,
}
