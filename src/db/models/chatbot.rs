//! The `chatbots` table.

use chrono::{DateTime, Utc};
use diesel::{
    AsChangeset, ExpressionMethods, Insertable, QueryDsl, Queryable, Selectable, SelectableHelper,
};
use diesel_async::RunQueryDsl;

use crate::db::schema::chatbots;
use crate::db::{db_run, DbConnection};
use crate::domain::{ChatbotId, PageRequest, UserId};

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
}

/// A chatbot to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = chatbots)]
pub struct NewChatbot {
    pub id: ChatbotId,
    pub owner_id: UserId,
    pub name: String,
    pub llm_endpoint_url: String,
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

    /// Owner of a chatbot, the one fact authorization needs.
    pub async fn find_owner(
        conn: &mut DbConnection,
        id: ChatbotId,
    ) -> diesel::QueryResult<Option<UserId>> {
        first_row!(conn, chatbots::table.find(id).select(chatbots::owner_id))
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

    /// One page in (created_at, id) order, of one owner or of everyone, plus
    /// one extra row if more follow.
    pub async fn list(
        conn: &mut DbConnection,
        owner: Option<UserId>,
        page: &PageRequest<ChatbotId>,
    ) -> diesel::QueryResult<Vec<Chatbot>> {
        db_run!(conn => {
            let mut query = keyset_page!(chatbots, Chatbot, page);
            if let Some(owner) = owner {
                query = query.filter(chatbots::owner_id.eq(owner));
            }
            query.load(conn).await
        })
    }
}
