//! The `sessions` table: one row per login, named by every access token
//! issued in it, so that ending the session ends those tokens too.

use chrono::{DateTime, Utc};
use diesel::{BoolExpressionMethods, ExpressionMethods, QueryDsl};
use diesel_async::RunQueryDsl;

use crate::db::schema::{refresh_tokens, sessions, users};
use crate::db::sql_types::Timestamp;
use crate::db::{db_run, DbConnection};
use crate::domain::{Role, SessionId, UserId};

/// A live session and its user's current role: what authorizing a call
/// needs, read in one indexed lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    pub id: SessionId,
    pub user_id: UserId,
    pub role: Role,
    /// The user's email, which the audit log records with what they do.
    pub email: std::sync::Arc<str>,
}

pub struct Session;

impl Session {
    /// Deletes up to `limit` sessions that ended before `before`: revoked
    /// then, or started then and left without a refresh token (all of
    /// its tokens expired and were purged, so nothing can renew it and its
    /// last access token expired long ago). Returns how many.
    pub async fn purge_ended(
        conn: &mut DbConnection,
        before: DateTime<Utc>,
        limit: i64,
    ) -> diesel::QueryResult<usize> {
        let before = Timestamp(before);
        let renewable = refresh_tokens::table.filter(refresh_tokens::family_id.eq(sessions::id));
        let ended = sessions::table
            .filter(sessions::created_at.lt(before))
            .filter(
                sessions::revoked_at
                    .lt(before)
                    .or(diesel::dsl::not(diesel::dsl::exists(renewable))),
            )
            .select(sessions::id)
            .limit(limit);
        db_run!(conn => {
            let ids: Vec<SessionId> = ended.load(conn).await?;
            diesel::delete(sessions::table.filter(sessions::id.eq_any(ids)))
                .execute(conn)
                .await
        })
    }

    pub async fn insert(
        conn: &mut DbConnection,
        id: SessionId,
        user_id: UserId,
    ) -> diesel::QueryResult<()> {
        db_run!(conn => {
            diesel::insert_into(sessions::table)
                .values((
                    sessions::id.eq(id),
                    sessions::user_id.eq(user_id),
                    sessions::created_at.eq(Timestamp::now()),
                ))
                .execute(conn)
                .await
                .map(drop)
        })
    }

    /// The session if it has not ended and its user still exists.
    pub async fn find_live(
        conn: &mut DbConnection,
        id: SessionId,
    ) -> diesel::QueryResult<Option<LiveSession>> {
        let row: Option<(UserId, String, String)> = first_row!(
            conn,
            sessions::table
                .inner_join(users::table)
                .filter(sessions::id.eq(id))
                .filter(sessions::revoked_at.is_null())
                .select((users::id, users::role, users::email))
        )?;
        Ok(row.map(|(user_id, role, email)| LiveSession {
            id,
            user_id,
            email: email.into(),
            // The CHECK constraint admits only the two roles; anything else
            // gets the lesser one.
            role: role.parse().unwrap_or(Role::User),
        }))
    }

    /// Locks a live session's row until the transaction ends, so that ending
    /// it waits for tokens being issued in it (a no-op write, which SQLite
    /// can also lock); false if it has ended.
    pub async fn lock_live(conn: &mut DbConnection, id: SessionId) -> diesel::QueryResult<bool> {
        let live = sessions::table
            .find(id)
            .filter(sessions::revoked_at.is_null());
        Ok(update_rows!(conn, live, sessions::created_at.eq(sessions::created_at))? == 1)
    }

    /// Ends one session; false if it had already ended.
    pub async fn revoke(
        conn: &mut DbConnection,
        id: SessionId,
        now: DateTime<Utc>,
    ) -> diesel::QueryResult<bool> {
        let live = sessions::table
            .find(id)
            .filter(sessions::revoked_at.is_null());
        Ok(update_rows!(conn, live, sessions::revoked_at.eq(Timestamp(now)))? == 1)
    }

    /// Signs a user out everywhere (password change, `create-admin`): ends
    /// every session, so their access tokens stop working at the next call,
    /// and revokes every refresh token, so no new session can follow.
    pub async fn end_all_for_user(
        conn: &mut DbConnection,
        user_id: UserId,
        now: DateTime<Utc>,
    ) -> diesel::QueryResult<()> {
        let live_sessions = sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::revoked_at.is_null());
        update_rows!(conn, live_sessions, sessions::revoked_at.eq(Timestamp(now)))?;
        let live_tokens = refresh_tokens::table
            .filter(refresh_tokens::user_id.eq(user_id))
            .filter(refresh_tokens::revoked_at.is_null());
        update_rows!(
            conn,
            live_tokens,
            refresh_tokens::revoked_at.eq(Timestamp(now))
        )?;
        Ok(())
    }
}
