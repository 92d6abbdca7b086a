//! The `refresh_tokens` table. Tokens are found by the SHA-256 digest of the
//! presented secret; one family per login, rotated on every refresh.

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, Insertable, QueryDsl, Queryable, Selectable, SelectableHelper};
use diesel_async::RunQueryDsl;

use crate::db::schema::refresh_tokens;
use crate::db::sql_types::Timestamp;
use crate::db::{db_run, DbConnection};
use crate::domain::{RefreshTokenId, SessionId, UserId};

/// A row of `refresh_tokens`, without the digest.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = refresh_tokens, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct RefreshToken {
    pub id: RefreshTokenId,
    pub user_id: UserId,
    pub family_id: SessionId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token to insert.
#[derive(Insertable)]
#[diesel(table_name = refresh_tokens)]
#[diesel(treat_none_as_default_value = false)] // see db::models: prepared once
pub struct NewRefreshToken<'a> {
    pub id: RefreshTokenId,
    pub user_id: UserId,
    pub family_id: SessionId,
    pub token_hash: &'a [u8],
    pub expires_at: Timestamp,
}

impl RefreshToken {
    /// Deletes up to `limit` tokens that expired before `before`; returns
    /// how many. An expired token signs nobody in and cannot be replayed
    /// into anything (expiry is checked before re-use).
    pub async fn purge_expired(
        conn: &mut DbConnection,
        before: DateTime<Utc>,
        limit: i64,
    ) -> diesel::QueryResult<usize> {
        let expired = refresh_tokens::table
            .filter(refresh_tokens::expires_at.lt(Timestamp(before)))
            .select(refresh_tokens::id)
            .limit(limit);
        db_run!(conn => {
            let ids: Vec<RefreshTokenId> = expired.load(conn).await?;
            diesel::delete(refresh_tokens::table.filter(refresh_tokens::id.eq_any(ids)))
                .execute(conn)
                .await
        })
    }

    pub async fn insert(
        conn: &mut DbConnection,
        new: NewRefreshToken<'_>,
    ) -> diesel::QueryResult<()> {
        db_run!(conn => {
            diesel::insert_into(refresh_tokens::table)
                .values((new, refresh_tokens::created_at.eq(Timestamp::now())))
                .execute(conn)
                .await
                .map(drop)
        })
    }

    pub async fn find_by_hash(
        conn: &mut DbConnection,
        token_hash: &[u8],
    ) -> diesel::QueryResult<Option<RefreshToken>> {
        first_row!(
            conn,
            refresh_tokens::table
                .filter(refresh_tokens::token_hash.eq(token_hash))
                .select(RefreshToken::as_select())
        )
    }

    /// Marks a token used if it still is usable; false means another request
    /// used or revoked it first (the caller then treats this as re-use).
    pub async fn mark_used(
        conn: &mut DbConnection,
        id: RefreshTokenId,
        now: DateTime<Utc>,
    ) -> diesel::QueryResult<bool> {
        let usable = refresh_tokens::table
            .find(id)
            .filter(refresh_tokens::used_at.is_null())
            .filter(refresh_tokens::revoked_at.is_null());
        Ok(update_rows!(conn, usable, refresh_tokens::used_at.eq(Timestamp(now)))? == 1)
    }

    /// Revokes every token of one login.
    pub async fn revoke_family(
        conn: &mut DbConnection,
        family_id: SessionId,
        now: DateTime<Utc>,
    ) -> diesel::QueryResult<usize> {
        let live = refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(family_id))
            .filter(refresh_tokens::revoked_at.is_null());
        update_rows!(conn, live, refresh_tokens::revoked_at.eq(Timestamp(now)))
    }
}
