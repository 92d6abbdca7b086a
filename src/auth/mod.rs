//! Who is calling: password hashing, access tokens (JWT) and the sessions
//! they belong to, the authentication layers, the client network an
//! address belongs to, login throttling, organization memberships, and
//! what a caller may act on ([`ownership`]).

mod layer;
mod memberships;
pub mod ownership;
mod password;
mod service_accounts;
mod sessions;
mod throttle;
mod tokens;

pub use layer::{
    in_service, AuthLayer, Credentials, CredentialsGate, RpcMethod, EXTERNAL_AUTHORIZATION_CHECK,
    PUBLIC_METHODS, PUBLIC_SERVICES,
};
pub use memberships::{MembershipCache, Memberships};
pub use password::{HashCost, HashSlot, PasswordHasher, DEFAULT_HASH_DUTY_PERCENT};
pub use service_accounts::{ServiceAccountCache, ServiceAccounts};
pub use sessions::{SessionCache, Sessions};
pub use throttle::{LoginThrottle, Reservation};
pub use tokens::{AccessToken, Claims, TokenKeys, AUDIENCE, ISSUER};

use std::net::{IpAddr, Ipv6Addr};

use crate::domain::{OrgRole, OrganizationId, Role, ServiceAccountId, UserId};
use crate::error::{AppError, AppResult};

/// The authenticated caller, put into request extensions by [`AuthLayer`]:
/// a live session's user with their current role (not the token's), or a
/// live service account; the address the call came from (the
/// password-change throttle counts by it), and the call's request id (the
/// audit log records both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    /// The platform role: a service account's is `User`.
    pub role: Role,
    pub address: Option<IpAddr>,
    pub request_id: Option<RequestId>,
    /// A signed-in person's email, as their session read it: what the audit
    /// log records with their changes, without reading it again.
    pub email: Option<std::sync::Arc<str>>,
}

/// Who a call acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A signed-in person.
    User(UserId),
    /// Another service, with a service account's token.
    ServiceAccount(ServiceAccountCaller),
}

/// A service account making a call: it acts in its one organization with
/// its role, and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountCaller {
    pub id: ServiceAccountId,
    pub organization: OrganizationId,
    pub role: OrgRole,
    pub name: std::sync::Arc<str>,
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::User(id) => write!(f, "{id}"),
            Principal::ServiceAccount(account) => write!(f, "service-account:{}", account.id),
        }
    }
}

/// The request id the outermost layer gave the call (the client's
/// `x-request-id` if it is short and plain, else a new UUID), in the
/// request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub std::sync::Arc<str>);

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The signed-in person, if a person is calling.
    pub fn user_id(&self) -> Option<UserId> {
        match &self.principal {
            Principal::User(id) => Some(*id),
            Principal::ServiceAccount(_) => None,
        }
    }

    /// The person calling, for what only a person may do (their account,
    /// sessions, creating organizations, accepting invitations): a service
    /// account is PERMISSION_DENIED.
    pub fn person(&self) -> AppResult<UserId> {
        self.user_id().ok_or(AppError::PermissionDenied)
    }

    /// The service account calling, if one is.
    pub fn service_account(&self) -> Option<&ServiceAccountCaller> {
        match &self.principal {
            Principal::User(_) => None,
            Principal::ServiceAccount(account) => Some(account),
        }
    }

    /// Where what the caller creates goes unless it says: a person's
    /// personal organization, a service account's own.
    pub fn home_organization(&self) -> OrganizationId {
        match &self.principal {
            Principal::User(id) => OrganizationId::personal(*id),
            Principal::ServiceAccount(account) => account.organization,
        }
    }

    /// Whether the caller may act for user `owner` (their account, their
    /// sessions): as that user or as an admin.
    pub fn may_act_for(&self, owner: UserId) -> bool {
        self.is_admin() || self.user_id() == Some(owner)
    }

    /// The rule for a user's own account: the caller acts on it only as
    /// that user or as an admin; anyone else is PERMISSION_DENIED. What
    /// belongs to organizations is authorized by [`ownership`].
    pub fn require_may_act_for(&self, owner: UserId) -> AppResult<()> {
        if self.may_act_for(owner) {
            Ok(())
        } else {
            Err(AppError::PermissionDenied)
        }
    }
}

/// The caller of a protected RPC. The layer already refused requests
/// without a valid token, so a miss here is a wiring bug, reported as
/// UNAUTHENTICATED rather than trusted.
pub fn caller<T>(request: &tonic::Request<T>) -> AppResult<Caller> {
    optional_caller(request).ok_or_else(|| AppError::Unauthenticated("missing bearer token".into()))
}

/// The caller of a public RPC, if it presented a valid token.
pub fn optional_caller<T>(request: &tonic::Request<T>) -> Option<Caller> {
    request.extensions().get::<Caller>().cloned()
}

/// The unit one client controls: an IPv4 address (also when it arrives
/// mapped into IPv6), or an IPv6 /64, the smallest network a site is
/// assigned; counting single IPv6 addresses would give a client 2^64
/// budgets. Rate limits and login budgets count per client network.
pub fn client_network(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1_u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_an_ipv4_address_or_an_ipv6_slash_64() {
        let network = |text: &str| client_network(text.parse().unwrap()).to_string();
        assert_eq!(network("203.0.113.9"), "203.0.113.9");
        assert_eq!(network("::ffff:203.0.113.9"), "203.0.113.9");
        assert_eq!(
            network("2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
            "2001:db8:1:2::"
        );
        assert_eq!(network("2001:db8:1:2::1"), network("2001:db8:1:2:ffff::9"));
        assert_ne!(network("2001:db8:1:2::1"), network("2001:db8:1:3::1"));
    }
}
