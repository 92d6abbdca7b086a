//! Typed identifiers, so a chatbot id can never be passed where a user id is
//! expected. How they are stored is the database layer's business.

use std::fmt;

use uuid::Uuid;

use super::FieldViolation;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id (UUIDv7 keeps index inserts local).
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses a UUID string from request field `field`.
            pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
                if value.is_empty() {
                    return Err(FieldViolation::new(field, "is required"));
                }
                Uuid::parse_str(value)
                    .map(Self)
                    .map_err(|_| FieldViolation::new(field, "must be a UUID"))
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(value).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// Id of a user.
    UserId
);
uuid_id!(
    /// Id of a chatbot.
    ChatbotId
);
uuid_id!(
    /// Id of one refresh token.
    RefreshTokenId
);
uuid_id!(
    /// Id of a login session: every refresh token rotated from one login
    /// shares it (the refresh-token family), and every access token issued
    /// in it names it.
    SessionId
);

uuid_id!(
    /// Id of an organization. A user's personal organization has the
    /// user's own id (see [`OrganizationId::personal`]).
    OrganizationId
);
uuid_id!(
    /// Id of an invitation to join an organization.
    InvitationId
);

uuid_id!(
    /// Id of a service account.
    ServiceAccountId
);

uuid_id!(
    /// Id of an organization's event: the same wherever it is delivered.
    EventId
);

uuid_id!(
    /// Id of a webhook: an endpoint an organization's events are sent to.
    WebhookId
);

uuid_id!(
    /// Id of one event's delivery to one webhook.
    WebhookDeliveryId
);

uuid_id!(
    /// Id of a server process, random at each start: who holds a lease.
    ReplicaId
);

uuid_id!(
    /// A caller's id for one create request (AIP-155's request_id).
    CreateRequestUuid
);

impl OrganizationId {
    /// The personal organization of `user`, made with the user.
    pub fn personal(user: UserId) -> Self {
        Self(user.0)
    }
}

/// Id of an API key (auto-increment, as in the original data model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiKeyId(pub i64);

impl ApiKeyId {
    pub fn parse(field: &str, value: i64) -> Result<Self, FieldViolation> {
        if value <= 0 {
            return Err(FieldViolation::new(field, "must be a positive API key id"));
        }
        Ok(Self(value))
    }
}

impl std::str::FromStr for ApiKeyId {
    type Err = std::num::ParseIntError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        value.parse().map(Self)
    }
}

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
