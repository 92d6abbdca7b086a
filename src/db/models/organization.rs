//! The `organizations`, `organization_members` and
//! `organization_invitations` tables. A user's personal organization is
//! made by the database itself when the user is inserted (a trigger of the
//! organizations migration), with the user's id as its id.

use chrono::{DateTime, Utc};
use diesel::{
    AsChangeset, BoolExpressionMethods, ExpressionMethods, Insertable, QueryDsl, Queryable,
    Selectable, SelectableHelper,
};
use diesel_async::RunQueryDsl;

use crate::db::schema::{
    chatbots, organization_invitations, organization_members, organizations, users,
};
use crate::db::sql_types::Timestamp;
use crate::db::{db_run, DbConnection};
use crate::domain::{InvitationId, OrgRole, OrganizationId, PageCursor, PageRequest, UserId};

/// A row of `organizations`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = organizations, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Organization {
    pub id: OrganizationId,
    pub name: String,
    pub personal_user_id: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A (team) organization to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = organizations)]
#[diesel(treat_none_as_default_value = false)] // see db::models: prepared once
pub struct NewOrganization {
    pub id: OrganizationId,
    pub name: String,
}

/// Fields to change; `None` leaves a column alone.
#[derive(Debug, AsChangeset, Default)]
#[diesel(table_name = organizations)]
pub struct OrganizationChanges {
    pub name: Option<String>,
}

resource_table!(Organization in organizations, id OrganizationId, new &NewOrganization, changes &OrganizationChanges);

impl Organization {
    pub fn is_personal(&self) -> bool {
        self.personal_user_id.is_some()
    }

    /// Locks the organization's row until the transaction ends (a no-op
    /// write, which SQLite can also lock), serialising changes to its
    /// members, so the last-owner rule holds against concurrent changes on
    /// any replica. Whether it exists.
    pub async fn lock(conn: &mut DbConnection, id: OrganizationId) -> diesel::QueryResult<bool> {
        let touch = organizations::updated_at.eq(organizations::updated_at);
        Ok(update_rows!(conn, organizations::table.find(id), touch)? == 1)
    }

    /// Holds the organization's row against deletion until the transaction
    /// ends (FOR KEY SHARE: other changes to it do not wait); see
    /// [`crate::db::write_in`], which takes it before a change to the rows
    /// the organization's delete deletes with it. Nothing to hold on SQLite,
    /// whose transactions take the one write lock at BEGIN and so cannot
    /// deadlock.
    pub async fn hold(conn: &mut DbConnection, id: OrganizationId) -> diesel::QueryResult<()> {
        let DbConnection::Postgres(conn) = conn else {
            return Ok(());
        };
        let row = organizations::table.find(id).select(organizations::id);
        row.for_key_share().execute(&mut **conn).await.map(drop)
    }

    /// Whether any chatbot belongs to the organization.
    pub async fn owns_chatbots(
        conn: &mut DbConnection,
        id: OrganizationId,
    ) -> diesel::QueryResult<bool> {
        let owned = chatbots::table.filter(chatbots::organization_id.eq(id));
        db_run!(conn => {
            diesel::select(diesel::dsl::exists(owned)).get_result(conn).await
        })
    }

    /// One page in (created_at, id) order, of the organizations `member`
    /// belongs to or (`None`) of all, plus one extra row if more follow.
    pub async fn list(
        conn: &mut DbConnection,
        member: Option<UserId>,
        page: &PageRequest<OrganizationId>,
    ) -> diesel::QueryResult<Vec<Organization>> {
        db_run!(conn => {
            let mut query = keyset_page!(organizations, Organization, page);
            if let Some(member) = member {
                let theirs = organization_members::table
                    .filter(organization_members::user_id.eq(member))
                    .select(organization_members::organization_id);
                query = query.filter(organizations::id.eq_any(theirs));
            }
            query.load(conn).await
        })
    }
}

/// A row of `organization_members`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = organization_members, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Member {
    pub organization_id: OrganizationId,
    pub user_id: UserId,
    role: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A member as ListMembers shows them: with their email.
#[derive(Debug, Clone)]
pub struct MemberWithEmail {
    pub member: Member,
    pub email: String,
}

impl Member {
    pub fn role(&self) -> OrgRole {
        // The CHECK constraint admits only the three roles.
        self.role.parse().unwrap_or(OrgRole::Viewer)
    }

    pub fn cursor(&self) -> PageCursor<UserId> {
        PageCursor {
            create_time: self.created_at,
            id: self.user_id,
        }
    }

    /// `user`'s membership of `organization`, if any.
    pub async fn find(
        conn: &mut DbConnection,
        organization: OrganizationId,
        user: UserId,
    ) -> diesel::QueryResult<Option<Member>> {
        first_row!(
            conn,
            organization_members::table
                .find((organization, user))
                .select(Member::as_select())
        )
    }

    /// The member whose user has `email` (lowercased), if any.
    pub async fn find_by_email(
        conn: &mut DbConnection,
        organization: OrganizationId,
        email: &str,
    ) -> diesel::QueryResult<Option<Member>> {
        first_row!(
            conn,
            organization_members::table
                .inner_join(users::table)
                .filter(organization_members::organization_id.eq(organization))
                .filter(users::email.eq(email))
                .select(Member::as_select())
        )
    }

    /// The member and their email.
    pub async fn find_with_email(
        conn: &mut DbConnection,
        organization: OrganizationId,
        user: UserId,
    ) -> diesel::QueryResult<Option<MemberWithEmail>> {
        let found: Option<(Member, String)> = first_row!(
            conn,
            organization_members::table
                .inner_join(users::table)
                .filter(organization_members::organization_id.eq(organization))
                .filter(organization_members::user_id.eq(user))
                .select((Member::as_select(), users::email))
        )?;
        Ok(found.map(|(member, email)| MemberWithEmail { member, email }))
    }

    /// Makes `user` a member; fails with a unique violation if they are
    /// one already.
    pub async fn insert(
        conn: &mut DbConnection,
        organization: OrganizationId,
        user: UserId,
        role: OrgRole,
    ) -> diesel::QueryResult<Member> {
        let now = Timestamp::now();
        db_run!(conn => {
            diesel::insert_into(organization_members::table)
                .values((
                    organization_members::organization_id.eq(organization),
                    organization_members::user_id.eq(user),
                    organization_members::role.eq(role.as_str()),
                    organization_members::created_at.eq(now),
                    organization_members::updated_at.eq(now),
                ))
                .returning(Member::as_returning())
                .get_result(conn)
                .await
        })
    }

    /// Changes a member's role; `None` if they are not a member.
    pub async fn set_role(
        conn: &mut DbConnection,
        organization: OrganizationId,
        user: UserId,
        role: OrgRole,
    ) -> diesel::QueryResult<Option<Member>> {
        let member = organization_members::table.find((organization, user));
        let changes = (
            organization_members::role.eq(role.as_str()),
            organization_members::updated_at.eq(Timestamp::now()),
        );
        if update_rows!(conn, member, changes)? == 0 {
            return Ok(None);
        }
        Self::find(conn, organization, user).await
    }

    /// Removes a member; whether they were one.
    pub async fn remove(
        conn: &mut DbConnection,
        organization: OrganizationId,
        user: UserId,
    ) -> diesel::QueryResult<bool> {
        let member = organization_members::table.find((organization, user));
        db_run!(conn => {
            Ok(diesel::delete(member).execute(conn).await? == 1)
        })
    }

    /// The owner who joined first (by user id among equals), other than
    /// `other_than`, if any.
    pub async fn longest_standing_owner(
        conn: &mut DbConnection,
        organization: OrganizationId,
        other_than: Option<UserId>,
    ) -> diesel::QueryResult<Option<UserId>> {
        let other_than = other_than.map_or(uuid::Uuid::nil(), |user| user.0);
        first_row!(
            conn,
            organization_members::table
                .filter(organization_members::organization_id.eq(organization))
                .filter(organization_members::role.eq(OrgRole::Owner.as_str()))
                .filter(organization_members::user_id.ne(UserId(other_than)))
                .order((
                    organization_members::created_at.asc(),
                    organization_members::user_id.asc(),
                ))
                .select(organization_members::user_id)
        )
    }

    /// How many owners the organization has.
    pub async fn count_owners(
        conn: &mut DbConnection,
        organization: OrganizationId,
    ) -> diesel::QueryResult<i64> {
        let owners = organization_members::table
            .filter(organization_members::organization_id.eq(organization))
            .filter(organization_members::role.eq(OrgRole::Owner.as_str()));
        db_run!(conn => owners.count().get_result(conn).await)
    }

    /// Every organization `user` belongs to, with their role there.
    pub async fn roles_of(
        conn: &mut DbConnection,
        user: UserId,
    ) -> diesel::QueryResult<Vec<(OrganizationId, OrgRole)>> {
        let rows: Vec<Member> = all_rows!(
            conn,
            organization_members::table
                .filter(organization_members::user_id.eq(user))
                .select(Member::as_select())
        )?;
        Ok(rows
            .into_iter()
            .map(|member| (member.organization_id, member.role()))
            .collect())
    }

    /// The team organizations in which `user` is the only owner: what
    /// deleting the user would leave without one. Every team the user
    /// belongs to is locked first (in id order, so two such calls cannot
    /// deadlock) and the roles read again under the locks, so neither two
    /// owners deleting themselves at once nor a promotion racing the
    /// deletion can leave a team without an owner.
    pub async fn solely_owned_by(
        conn: &mut DbConnection,
        user: UserId,
    ) -> diesel::QueryResult<Vec<OrganizationId>> {
        let mut teams: Vec<OrganizationId> = Self::roles_of(conn, user)
            .await?
            .into_iter()
            .map(|(organization, _)| organization)
            .filter(|&organization| organization != OrganizationId::personal(user))
            .collect();
        teams.sort();
        for &organization in &teams {
            Organization::lock(conn, organization).await?;
        }
        let mut sole = Vec::new();
        for (organization, role) in Self::roles_of(conn, user).await? {
            if role == OrgRole::Owner
                && organization != OrganizationId::personal(user)
                && Self::count_owners(conn, organization).await? == 1
            {
                sole.push(organization);
            }
        }
        Ok(sole)
    }

    /// One page of an organization's members in (joined, user id) order,
    /// plus one extra row if more follow.
    pub async fn list(
        conn: &mut DbConnection,
        organization: OrganizationId,
        page: &PageRequest<UserId>,
    ) -> diesel::QueryResult<Vec<MemberWithEmail>> {
        let rows: Vec<(Member, String)> = db_run!(conn => {
            let mut query = organization_members::table
                .inner_join(users::table)
                .filter(organization_members::organization_id.eq(organization))
                .select((Member::as_select(), users::email))
                .order((
                    organization_members::created_at.asc(),
                    organization_members::user_id.asc(),
                ))
                .limit(page.fetch_limit())
                .into_boxed();
            if let Some(after) = &page.after {
                let at = Timestamp(after.create_time);
                query = query.filter(
                    organization_members::created_at.gt(at).or(organization_members::created_at
                        .eq(at)
                        .and(organization_members::user_id.gt(after.id))),
                );
            }
            query.load(conn).await
        })?;
        Ok(rows
            .into_iter()
            .map(|(member, email)| MemberWithEmail { member, email })
            .collect())
    }
}

/// A row of `organization_invitations`, without the token's digest.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = organization_invitations, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Invitation {
    pub id: InvitationId,
    pub organization_id: OrganizationId,
    pub email: String,
    role: String,
    pub created_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_by: Option<UserId>,
    pub accepted_at: Option<DateTime<Utc>>,
}

/// An invitation to insert.
#[derive(Insertable)]
#[diesel(table_name = organization_invitations)]
#[diesel(treat_none_as_default_value = false)] // see db::models: prepared once
pub struct NewInvitation<'a> {
    pub id: InvitationId,
    pub organization_id: OrganizationId,
    pub email: &'a str,
    pub role: &'a str,
    pub token_hash: &'a [u8],
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for NewInvitation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewInvitation")
            .field("id", &self.id)
            .field("organization_id", &self.organization_id)
            .finish_non_exhaustive()
    }
}

resource_table!(Invitation in organization_invitations, id InvitationId);

impl Invitation {
    pub fn role(&self) -> OrgRole {
        // The CHECK constraint admits only the three roles.
        self.role.parse().unwrap_or(OrgRole::Viewer)
    }

    pub async fn insert(
        conn: &mut DbConnection,
        new: NewInvitation<'_>,
    ) -> diesel::QueryResult<Invitation> {
        db_run!(conn => {
            diesel::insert_into(organization_invitations::table)
                .values(new)
                .returning(Invitation::as_returning())
                .get_result(conn)
                .await
        })
    }

    /// The invitation whose token has this digest.
    pub async fn find_by_token(
        conn: &mut DbConnection,
        digest: &[u8; 32],
    ) -> diesel::QueryResult<Option<Invitation>> {
        first_row!(
            conn,
            organization_invitations::table
                .filter(organization_invitations::token_hash.eq(&digest[..]))
                .select(Invitation::as_select())
        )
    }

    /// Marks the invitation accepted by `user` unless it already is (a
    /// no-op then, which still locks the row); whether this call accepted
    /// it. Of two racing acceptances exactly one gets `true`.
    pub async fn accept(
        conn: &mut DbConnection,
        id: InvitationId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> diesel::QueryResult<bool> {
        let pending = organization_invitations::table
            .find(id)
            .filter(organization_invitations::accepted_at.is_null());
        let accept = (
            organization_invitations::accepted_by.eq(user),
            organization_invitations::accepted_at.eq(Timestamp(now)),
        );
        Ok(update_rows!(conn, pending, accept)? == 1)
    }

    /// One page of an organization's invitations not yet accepted, in
    /// (created_at, id) order, plus one extra row if more follow.
    pub async fn list_pending(
        conn: &mut DbConnection,
        organization: OrganizationId,
        page: &PageRequest<InvitationId>,
    ) -> diesel::QueryResult<Vec<Invitation>> {
        db_run!(conn => {
            keyset_page!(organization_invitations, Invitation, page)
                .filter(organization_invitations::organization_id.eq(organization))
                .filter(organization_invitations::accepted_at.is_null())
                .load(conn)
                .await
        })
    }

    /// Deletes up to `limit` invitations that expired before `before`;
    /// returns how many.
    pub async fn purge_expired(
        conn: &mut DbConnection,
        before: DateTime<Utc>,
        limit: i64,
    ) -> diesel::QueryResult<usize> {
        let expired = organization_invitations::table
            .filter(organization_invitations::expires_at.lt(Timestamp(before)))
            .select(organization_invitations::id)
            .limit(limit);
        db_run!(conn => {
            let ids: Vec<InvitationId> = expired.load(conn).await?;
            diesel::delete(
                organization_invitations::table.filter(organization_invitations::id.eq_any(ids)),
            )
            .execute(conn)
            .await
        })
    }
}
