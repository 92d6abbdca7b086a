//! The `chatbots` table.

use chrono::{DateTime, Utc};
use diesel::{
    AsChangeset, BoolExpressionMethods, ExpressionMethods, Insertable, OptionalExtension, QueryDsl,
    Queryable, Selectable, SelectableHelper,
};
use diesel_async::RunQueryDsl;

use crate::db::schema::chatbots;
use crate::db::sql_types::Timestamp;
use crate::db::{db_run, DbConnection};
use crate::domain::{ChatbotId, PageCursor, PageRequest, UserId};

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

impl Chatbot {
    pub fn cursor(&self) -> PageCursor<ChatbotId> {
        PageCursor {
            create_time: self.created_at,
            id: self.id,
        }
    }

    pub async fn insert(conn: &mut DbConnection, new: &NewChatbot) -> diesel::QueryResult<Chatbot> {
        db_run!(conn => {
            let now = Timestamp::now();
            diesel::insert_into(chatbots::table)
                .values((new, chatbots::created_at.eq(now), chatbots::updated_at.eq(now)))
                .returning(Chatbot::as_returning())
                .get_result(conn)
                .await
        })
    }

    pub async fn find(
        conn: &mut DbConnection,
        id: ChatbotId,
    ) -> diesel::QueryResult<Option<Chatbot>> {
        db_run!(conn => {
            chatbots::table
                .find(id)
                .select(Chatbot::as_select())
                .first(conn)
                .await
                .optional()
        })
    }

    /// The chatbots among `ids` that exist, in no particular order: one
    /// statement for many point reads (`= ANY($1)` on PostgreSQL).
    pub async fn find_many(
        conn: &mut DbConnection,
        ids: &[ChatbotId],
    ) -> diesel::QueryResult<Vec<Chatbot>> {
        db_run!(conn => {
            chatbots::table
                .filter(chatbots::id.eq_any(ids))
                .select(Chatbot::as_select())
                .load(conn)
                .await
        })
    }

    /// Owner of a chatbot, the one fact authorization needs.
    pub async fn find_owner(
        conn: &mut DbConnection,
        id: ChatbotId,
    ) -> diesel::QueryResult<Option<UserId>> {
        db_run!(conn => {
            chatbots::table
                .find(id)
                .select(chatbots::owner_id)
                .first(conn)
                .await
                .optional()
        })
    }

    /// Locks the chatbot's row until the transaction ends, serialising
    /// changes to its key set (the active-key limit). A no-op write rather
    /// than `SELECT ... FOR UPDATE`, which SQLite lacks: on PostgreSQL it
    /// takes the row lock, on SQLite the database's write lock, and as the
    /// transaction's first statement it waits (busy_timeout) instead of
    /// failing a later read-to-write upgrade with SQLITE_BUSY.
    pub async fn lock(conn: &mut DbConnection, id: ChatbotId) -> diesel::QueryResult<bool> {
        let locked = db_run!(conn => {
            diesel::update(chatbots::table.find(id))
                .set(chatbots::updated_at.eq(chatbots::updated_at))
                .execute(conn)
                .await
        })?;
        Ok(locked == 1)
    }

    /// One page in (created_at, id) order, of one owner or of everyone, plus
    /// one extra row if more follow.
    pub async fn list(
        conn: &mut DbConnection,
        owner: Option<UserId>,
        page: &PageRequest<ChatbotId>,
    ) -> diesel::QueryResult<Vec<Chatbot>> {
        db_run!(conn => {
            let mut query = chatbots::table
                .select(Chatbot::as_select())
                .order((chatbots::created_at.asc(), chatbots::id.asc()))
                .limit(page.fetch_limit())
                .into_boxed();
            if let Some(owner) = owner {
                query = query.filter(chatbots::owner_id.eq(owner));
            }
            if let Some(after) = &page.after {
                query = query.filter(
                    chatbots::created_at
                        .gt(Timestamp(after.create_time))
                        .or(chatbots::created_at
                            .eq(Timestamp(after.create_time))
                            .and(chatbots::id.gt(after.id))),
                );
            }
            query.load(conn).await
        })
    }

    /// Renames the chatbot or moves its endpoint, and stamps `updated_at`.
    pub async fn update(
        conn: &mut DbConnection,
        id: ChatbotId,
        changes: &ChatbotChanges,
    ) -> diesel::QueryResult<Option<Chatbot>> {
        db_run!(conn => {
            diesel::update(chatbots::table.find(id))
                .set((changes, chatbots::updated_at.eq(Timestamp::now())))
                .returning(Chatbot::as_returning())
                .get_result(conn)
                .await
                .optional()
        })
    }

    /// Deletes the chatbot; its API keys go by cascade.
    pub async fn delete(conn: &mut DbConnection, id: ChatbotId) -> diesel::QueryResult<bool> {
        db_run!(conn => {
            let deleted = diesel::delete(chatbots::table.find(id))
                .execute(conn)
                .await?;
            Ok(deleted > 0)
        })
    }

    pub async fn count(conn: &mut DbConnection) -> diesel::QueryResult<i64> {
        db_run!(conn => {
            chatbots::table.count().get_result(conn).await
        })
    }
}
