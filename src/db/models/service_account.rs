//! The `service_accounts` table: credentials for other services (a
//! provisioning or billing system) that act in one organization with a role,
//! held by no person. Each has one token, found by the SHA-256 digest of
//! what is presented; the token itself is never stored.

use chrono::{DateTime, Utc};
use diesel::{
    BoolExpressionMethods, ExpressionMethods, Insertable, NullableExpressionMethods, QueryDsl,
    Queryable, Selectable, SelectableHelper,
};
use diesel_async::RunQueryDsl;

use crate::db::schema::service_accounts;
use crate::db::sql_types::Timestamp;
use crate::db::{db_run, DbConnection};
use crate::domain::{OrgRole, OrganizationId, PageRequest, ServiceAccountId, UserId};

/// A row of `service_accounts`, without the token's digest.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = service_accounts, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct ServiceAccount {
    pub id: ServiceAccountId,
    pub organization_id: OrganizationId,
    pub name: String,
    role: String,
    pub token_prefix: String,
    pub created_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A service account to insert.
#[derive(Insertable)]
#[diesel(table_name = service_accounts)]
#[diesel(treat_none_as_default_value = false)] // see db::models: prepared once
pub struct NewServiceAccount<'a> {
    pub id: ServiceAccountId,
    pub organization_id: OrganizationId,
    pub name: &'a str,
    pub role: &'a str,
    pub token_prefix: &'a str,
    pub token_hash: &'a [u8],
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

impl std::fmt::Debug for NewServiceAccount<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewServiceAccount")
            .field("id", &self.id)
            .field("organization_id", &self.organization_id)
            .finish_non_exhaustive()
    }
}

/// What authenticating a call with a service account's token needs, read
/// in one probe of the unique digest index (and cached).
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct ServiceAccountCredential {
    pub id: ServiceAccountId,
    pub organization_id: OrganizationId,
    pub name: String,
    role: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ServiceAccountCredential {
    pub fn role(&self) -> OrgRole {
        // The CHECK constraint admits only editor and viewer.
        self.role.parse().unwrap_or(OrgRole::Viewer)
    }

    /// Whether the token works at `now`: not revoked, not expired.
    pub fn is_live_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

resource_table!(ServiceAccount in service_accounts, id ServiceAccountId);

impl ServiceAccount {
    pub fn role(&self) -> OrgRole {
        // The CHECK constraint admits only editor and viewer.
        self.role.parse().unwrap_or(OrgRole::Viewer)
    }

    pub async fn insert(
        conn: &mut DbConnection,
        new: NewServiceAccount<'_>,
    ) -> diesel::QueryResult<ServiceAccount> {
        db_run!(conn => {
            diesel::insert_into(service_accounts::table)
                .values(new)
                .returning(ServiceAccount::as_returning())
                .get_result(conn)
                .await
        })
    }

    /// The credential whose token has this digest, live or not.
    pub async fn find_credential(
        conn: &mut DbConnection,
        digest: &[u8; 32],
    ) -> diesel::QueryResult<Option<ServiceAccountCredential>> {
        first_row!(
            conn,
            service_accounts::table
                .filter(service_accounts::token_hash.eq(&digest[..]))
                .select((
                    service_accounts::id,
                    service_accounts::organization_id,
                    service_accounts::name,
                    service_accounts::role,
                    service_accounts::expires_at,
                    service_accounts::revoked_at,
                ))
        )
    }

    /// Revokes the token unless it already is; whether this call did.
    pub async fn revoke(
        conn: &mut DbConnection,
        id: ServiceAccountId,
        now: DateTime<Utc>,
    ) -> diesel::QueryResult<bool> {
        let live = service_accounts::table
            .find(id)
            .filter(service_accounts::revoked_at.is_null());
        Ok(update_rows!(conn, live, service_accounts::revoked_at.eq(Timestamp(now)))? == 1)
    }

    /// Records the token's last use; never moves the time back.
    pub async fn record_use(
        conn: &mut DbConnection,
        id: ServiceAccountId,
        at: DateTime<Utc>,
    ) -> diesel::QueryResult<()> {
        let earlier = service_accounts::last_used_at
            .is_null()
            .or(service_accounts::last_used_at
                .assume_not_null()
                .lt(Timestamp(at)));
        let account = service_accounts::table.find(id).filter(earlier);
        update_rows!(
            conn,
            account,
            service_accounts::last_used_at.eq(Timestamp(at))
        )?;
        Ok(())
    }

    /// One page of an organization's service accounts in (created_at, id)
    /// order, plus one extra row if more follow.
    pub async fn list(
        conn: &mut DbConnection,
        organization: OrganizationId,
        page: &PageRequest<ServiceAccountId>,
    ) -> diesel::QueryResult<Vec<ServiceAccount>> {
        db_run!(conn => {
            keyset_page!(service_accounts, ServiceAccount, page)
                .filter(service_accounts::organization_id.eq(organization))
                .load(conn)
                .await
        })
    }
}
