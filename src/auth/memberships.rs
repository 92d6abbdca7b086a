//! Who belongs to which organization, with which role: what authorizing
//! every call about a chatbot, a key or an organization asks. A warm
//! replica answers from [`MembershipCache`] without a query; a membership
//! change commits with an [`Invalidation::Organization`], so a removed or
//! demoted member loses access at their next call on every replica (see
//! [`crate::cache`]).

use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::{Invalidated, InvalidatedCache, Lookup};
use crate::db::models::Member;
use crate::db::{Database, DbConnection, Invalidation};
use crate::domain::{OrgRole, OrganizationId, UserId};
use crate::error::AppResult;

/// Memberships held per replica; a miss costs one primary-key read.
const CACHE_CAPACITY: usize = 100_000;
/// Bounds what a missed notification could leave behind, as for sessions.
const CACHE_TTL: Duration = Duration::from_secs(30);

/// A user's role in one organization, or that they have none. Unlike a
/// cached missing row, "not a member" goes stale too: joining makes it so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedMembership {
    user: UserId,
    organization: OrganizationId,
    role: Option<OrgRole>,
}

impl Invalidated for CachedMembership {
    fn is_stale_after(&self, change: &Invalidation) -> bool {
        match *change {
            Invalidation::Organization(id) => self.organization == id,
            Invalidation::Owner(id) => self.user == id,
            Invalidation::Key(_)
            | Invalidation::Chatbot(_)
            | Invalidation::Session(_)
            | Invalidation::ServiceAccount(_) => false,
        }
    }
}

pub type MembershipCache = InvalidatedCache<(UserId, OrganizationId), CachedMembership>;

/// Looks memberships up through the cache.
#[derive(Clone)]
pub struct Memberships {
    cache: Arc<MembershipCache>,
    db: Database,
}

impl Memberships {
    /// Memberships in `db`, cached, counting cache lookups in `hits` and
    /// `misses`.
    pub fn new(db: Database, hits: Counter, misses: Counter) -> Self {
        let cache = MembershipCache::new(CACHE_CAPACITY, CACHE_TTL).counting_lookups(hits, misses);
        Self {
            cache: Arc::new(cache),
            db,
        }
    }

    pub fn cache(&self) -> &MembershipCache {
        &self.cache
    }

    /// `user`'s role in `organization`, `None` if they are no member;
    /// UNAVAILABLE if that cannot be known. A miss reads on `conn` if given
    /// (a caller holding a connection must pass it: a second one from a
    /// small pool could wait for its own), else on a pooled one.
    pub async fn role(
        &self,
        conn: Option<&mut DbConnection>,
        user: UserId,
        organization: OrganizationId,
    ) -> AppResult<Option<OrgRole>> {
        let key = (user, organization);
        match self.cache.get(&key) {
            Lookup::Hit(membership) => Ok(membership.role),
            Lookup::Miss(generation) => {
                let member = match conn {
                    Some(conn) => Member::find(conn, organization, user).await?,
                    None => Member::find(&mut self.db.conn().await?, organization, user).await?,
                };
                let membership = CachedMembership {
                    user,
                    organization,
                    role: member.map(|member| member.role()),
                };
                self.cache.insert(&key, membership, generation);
                Ok(membership.role)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_membership_or_its_absence_is_stale_after_its_organization_or_user_changes() {
        let (user, organization) = (UserId::generate(), OrganizationId::generate());
        for role in [Some(OrgRole::Editor), None] {
            let membership = CachedMembership {
                user,
                organization,
                role,
            };
            assert!(membership.is_stale_after(&Invalidation::Organization(organization)));
            assert!(membership.is_stale_after(&Invalidation::Owner(user)));
            assert!(
                !membership.is_stale_after(&Invalidation::Organization(OrganizationId::generate()))
            );
            assert!(!membership.is_stale_after(&Invalidation::Owner(UserId::generate())));
        }
    }
}
