//! The `chatbots` table.

use chrono::{DateTime, Utc};
use diesel::{
    AsChangeset, ExpressionMethods, Insertable, QueryDsl, Queryable, QueryableByName, Selectable,
    SelectableHelper,
};
use diesel_async::RunQueryDsl;

use crate::db::models::Member;
use crate::db::schema::{chatbots, organization_members};
use crate::db::{db_run, DbConnection};
use crate::domain::{ChatbotId, OrganizationId, PageRequest, UserId};

/// A row of `chatbots`.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = chatbots, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Chatbot {
    pub id: ChatbotId,
    pub owner_id: UserId,
    pub name: String,
    pub llm_endpoint_url: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub organization_id: OrganizationId,
}

/// A chatbot to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = chatbots)]
#[diesel(treat_none_as_default_value = false)] // see db::models: prepared once
pub struct NewChatbot {
    pub id: ChatbotId,
    pub organization_id: OrganizationId,
    pub owner_id: UserId,
    pub name: String,
    pub llm_endpoint_url: String,
}

/// Which chatbots ListChatbots returns: every filter given applies.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChatbotFilter {
    pub organization: Option<OrganizationId>,
    pub owner: Option<UserId>,
    /// Only chatbots of organizations this user belongs to; `None` for an
    /// admin, who sees every organization's.
    pub member: Option<UserId>,
}

/// Fields to change; `None` leaves a column alone. [`Chatbot::update`]
/// sets `updated_at` itself.
#[derive(Debug, AsChangeset, Default)]
#[diesel(table_name = chatbots)]
pub struct ChatbotChanges {
    pub name: Option<String>,
    pub llm_endpoint_url: Option<String>,
}

// Chatbots by id; deleting one takes its API keys with it (by cascade).
resource_table!(Chatbot in chatbots, id ChatbotId, new &NewChatbot, changes &ChatbotChanges);

impl Chatbot {
    /// The chatbots among `ids` that exist, in no particular order: one
    /// statement for many point reads (`= ANY($1)` on PostgreSQL).
    pub async fn find_many(
        conn: &mut DbConnection,
        ids: &[ChatbotId],
    ) -> diesel::QueryResult<Vec<Chatbot>> {
        all_rows!(
            conn,
            chatbots::table
                .filter(chatbots::id.eq_any(ids))
                .select(Chatbot::as_select())
        )
    }

    /// The chatbot `new` becomes, stamped now (to the microsecond, as both
    /// stores keep it), and the statement that inserts it: for
    /// [`crate::db::insert`], which needs the row before it is written.
    pub fn insertion(
        new: &NewChatbot,
    ) -> (
        Chatbot,
        impl diesel::query_builder::QueryFragment<diesel::pg::Pg>
            + diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite>
            + diesel::query_builder::QueryId
            + Send
            + '_,
    ) {
        use chrono::SubsecRound;
        let now = Utc::now().trunc_subsecs(6);
        let chatbot = Chatbot {
            id: new.id,
            owner_id: new.owner_id,
            name: new.name.clone(),
            llm_endpoint_url: new.llm_endpoint_url.clone(),
            created_at: now,
            updated_at: now,
            organization_id: new.organization_id,
        };
        let stamped = crate::db::sql_types::Timestamp(now);
        let insert = diesel::insert_into(chatbots::table).values((
            new,
            chatbots::created_at.eq(stamped),
            chatbots::updated_at.eq(stamped),
        ));
        (chatbot, insert)
    }

    /// The chatbot's organization and owner: what authorizing a call about
    /// its keys needs.
    pub async fn find_organization(
        conn: &mut DbConnection,
        id: ChatbotId,
    ) -> diesel::QueryResult<Option<(OrganizationId, UserId)>> {
        first_row!(
            conn,
            chatbots::table
                .find(id)
                .select((chatbots::organization_id, chatbots::owner_id))
        )
    }

    /// Hands the chatbots `user` is accountable for in team organizations
    /// to another owner of each (the longest-standing), so that deleting
    /// the user (whose chatbots go with them by cascade) leaves the teams'
    /// chatbots in place. A team with no other owner (which the caller
    /// should have refused already) is returned, and the caller must not
    /// delete the user.
    pub async fn hand_over_from(
        conn: &mut DbConnection,
        user: UserId,
    ) -> diesel::QueryResult<Option<OrganizationId>> {
        let personal = OrganizationId::personal(user);
        let organizations: Vec<OrganizationId> = all_rows!(
            conn,
            chatbots::table
                .filter(chatbots::owner_id.eq(user))
                .filter(chatbots::organization_id.ne(personal))
                .select(chatbots::organization_id)
                .distinct()
        )?;
        for organization in organizations {
            let heir = Member::longest_standing_owner(conn, organization, Some(user)).await?;
            let Some(heir) = heir else {
                return Ok(Some(organization));
            };
            let theirs = chatbots::table
                .filter(chatbots::owner_id.eq(user))
                .filter(chatbots::organization_id.eq(organization));
            update_rows!(conn, theirs, chatbots::owner_id.eq(heir))?;
        }
        Ok(None)
    }

    /// Locks the chatbot's row until the transaction ends, serialising
    /// changes to its key set (the active-key limit). A no-op write rather
    /// than `SELECT ... FOR UPDATE`, which SQLite lacks: on PostgreSQL it
    /// takes the row lock; a SQLite transaction holds the database's write
    /// lock from its BEGIN.
    pub async fn lock(conn: &mut DbConnection, id: ChatbotId) -> diesel::QueryResult<bool> {
        let touch = chatbots::updated_at.eq(chatbots::updated_at);
        Ok(update_rows!(conn, chatbots::table.find(id), touch)? == 1)
    }

    /// One page in (created_at, id) order of the chatbots `filter`
    /// selects, plus one extra row if more follow.
    pub async fn list(
        conn: &mut DbConnection,
        filter: &ChatbotFilter,
        page: &PageRequest<ChatbotId>,
    ) -> diesel::QueryResult<Vec<Chatbot>> {
        if let (Some(member), DbConnection::Postgres(pg)) = (filter.member, &mut *conn) {
            return Self::list_of_member(pg, member, filter, page).await;
        }
        db_run!(conn => {
            let mut query = keyset_page!(chatbots, Chatbot, page);
            if let Some(organization) = filter.organization {
                query = query.filter(chatbots::organization_id.eq(organization));
            }
            if let Some(owner) = filter.owner {
                query = query.filter(chatbots::owner_id.eq(owner));
            }
            if let Some(member) = filter.member {
                let theirs = organization_members::table
                    .filter(organization_members::user_id.eq(member))
                    .select(organization_members::organization_id);
                query = query.filter(chatbots::organization_id.eq_any(theirs));
            }
            query.load(conn).await
        })
    }

    /// A member's page on PostgreSQL: one index range per organization of
    /// theirs, merged, so the cost follows the page and the number of their
    /// organizations, not the size of the table. (Filtering one scan of the
    /// whole table in page order by membership, the plan PostgreSQL picks
    /// for the general query, read every chatbot created before the first
    /// of theirs.) One statement text per shape, prepared once per
    /// connection.
    async fn list_of_member(
        conn: &mut diesel_async::AsyncPgConnection,
        member: UserId,
        filter: &ChatbotFilter,
        page: &PageRequest<ChatbotId>,
    ) -> diesel::QueryResult<Vec<Chatbot>> {
        let query = MemberPage {
            member: member.0,
            organization: filter.organization.map(|id| id.0),
            owner: filter.owner.map(|id| id.0),
            limit: page.fetch_limit(),
        };
        match &page.after {
            None => query.load(conn).await,
            Some(after) => {
                let after = MemberPageAfter {
                    page: query,
                    create_time: after.create_time,
                    id: after.id.0,
                };
                after.load(conn).await
            }
        }
    }
}

/// [`Chatbot::list_of_member`]'s first page.
#[derive(diesel::query_builder::QueryId)]
struct MemberPage {
    member: uuid::Uuid,
    organization: Option<uuid::Uuid>,
    owner: Option<uuid::Uuid>,
    limit: i64,
}

/// A later page: after the cursor, which the index on (organization,
/// created_at, id) seeks to.
#[derive(diesel::query_builder::QueryId)]
struct MemberPageAfter {
    page: MemberPage,
    create_time: DateTime<Utc>,
    id: uuid::Uuid,
}

impl MemberPage {
    fn walk<'b>(
        &'b self,
        after: Option<(&'b DateTime<Utc>, &'b uuid::Uuid)>,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        use diesel::sql_types::{BigInt, Nullable, Timestamptz, Uuid};
        out.push_sql(
            "SELECT p.* FROM organization_members m CROSS JOIN LATERAL ( \
             SELECT c.* FROM chatbots c WHERE c.organization_id = m.organization_id \
             AND (",
        );
        out.push_bind_param::<Nullable<Uuid>, _>(&self.owner)?;
        out.push_sql("::uuid IS NULL OR c.owner_id = ");
        out.push_bind_param::<Nullable<Uuid>, _>(&self.owner)?;
        out.push_sql(")");
        if let Some((create_time, id)) = after {
            out.push_sql(" AND (c.created_at, c.id) > (");
            out.push_bind_param::<Timestamptz, _>(create_time)?;
            out.push_sql(", ");
            out.push_bind_param::<Uuid, _>(id)?;
            out.push_sql(")");
        }
        out.push_sql(" ORDER BY c.created_at, c.id LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        out.push_sql(") p WHERE m.user_id = ");
        out.push_bind_param::<Uuid, _>(&self.member)?;
        out.push_sql(" AND (");
        out.push_bind_param::<Nullable<Uuid>, _>(&self.organization)?;
        out.push_sql("::uuid IS NULL OR m.organization_id = ");
        out.push_bind_param::<Nullable<Uuid>, _>(&self.organization)?;
        out.push_sql(") ORDER BY p.created_at, p.id LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        Ok(())
    }
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for MemberPage {
    fn walk_ast<'b>(
        &'b self,
        out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        self.walk(None, out)
    }
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for MemberPageAfter {
    fn walk_ast<'b>(
        &'b self,
        out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        self.page.walk(Some((&self.create_time, &self.id)), out)
    }
}

impl diesel::query_builder::Query for MemberPage {
    type SqlType = diesel::sql_types::Untyped;
}

impl diesel::query_builder::Query for MemberPageAfter {
    type SqlType = diesel::sql_types::Untyped;
}
