//! The `chatbots` table.

use chrono::{DateTime, Utc};
use diesel::{
    AsChangeset, ExpressionMethods, Insertable, QueryDsl, Queryable, Selectable, SelectableHelper,
};
use diesel_async::RunQueryDsl;

use crate::db::models::Member;
use crate::db::schema::{chatbots, organization_members};
use crate::db::{db_run, DbConnection};
use crate::domain::{ChatbotId, OrganizationId, PageRequest, UserId};

/// A row of `chatbots`.
#[derive(Debug, Clone, Queryable, Selectable)]
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
    /// takes the row lock, on SQLite the database's write lock, and as the
    /// transaction's first statement it waits (busy_timeout) instead of
    /// failing a later read-to-write upgrade with SQLITE_BUSY.
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
}
