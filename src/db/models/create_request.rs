//! The `create_requests` table: the request ids creates were made with, so
//! a retried create returns what the first one made (AIP-155).

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, Insertable, QueryDsl, Queryable, Selectable};

use crate::db::schema::create_requests;
use crate::db::sql_types::Timestamp;
use crate::db::DbConnection;
use crate::domain::CreateRequestUuid;

/// A create's request id, as its caller made it: who, which RPC, the id,
/// and a digest of the rest of the request.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = create_requests)]
#[diesel(treat_none_as_default_value = false)] // see db::models: prepared once
pub struct RequestKey {
    pub caller: String,
    pub method: &'static str,
    pub request_id: CreateRequestUuid,
    pub request_digest: Vec<u8>,
}

/// What an earlier request with the same id made.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = create_requests, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct CreateRequest {
    pub request_digest: Vec<u8>,
    pub resource_id: String,
    pub secret_salt: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
}

impl CreateRequest {
    /// Records `key` as made now, with the salt of the secret it will
    /// derive, unless a request with its id was recorded before: then that
    /// one. On PostgreSQL an insert that meets a first attempt still in
    /// flight waits for it to commit (then it is returned) or roll back
    /// (then this one is recorded).
    pub async fn claim(
        conn: &mut DbConnection,
        key: &RequestKey,
        secret_salt: Option<&[u8]>,
        now: DateTime<Utc>,
    ) -> diesel::QueryResult<Option<CreateRequest>> {
        use diesel::SelectableHelper;
        let inserted = crate::db::db_run!(conn => {
            diesel_async::RunQueryDsl::execute(
                diesel::insert_into(create_requests::table)
                    .values((
                        key.clone(),
                        create_requests::resource_id.eq(""),
                        create_requests::secret_salt.eq(secret_salt),
                        create_requests::created_at.eq(Timestamp(now)),
                    ))
                    .on_conflict_do_nothing(),
                conn,
            )
            .await
        })?;
        if inserted == 1 {
            return Ok(None);
        }
        first_row!(
            conn,
            create_requests::table
                .find((&key.caller, key.method, key.request_id))
                .select(CreateRequest::as_select())
        )
    }

    /// Records what the request recorded by [`Self::claim`] created.
    pub async fn created(
        conn: &mut DbConnection,
        key: &RequestKey,
        resource_id: &str,
    ) -> diesel::QueryResult<()> {
        update_rows!(
            conn,
            create_requests::table.find((&key.caller, key.method, key.request_id)),
            create_requests::resource_id.eq(resource_id)
        )?;
        Ok(())
    }

    /// Deletes the oldest requests made before `before`: about `limit`
    /// (those made at the same instant as the last of them go too).
    pub async fn purge(
        conn: &mut DbConnection,
        before: DateTime<Utc>,
        limit: i64,
    ) -> diesel::QueryResult<usize> {
        let nth_oldest: Option<DateTime<Utc>> = first_row!(
            conn,
            create_requests::table
                .filter(create_requests::created_at.lt(Timestamp(before)))
                .select(create_requests::created_at)
                .order(create_requests::created_at)
                .offset(limit - 1)
        )?;
        // The n-th oldest is before `before`; without one, fewer are.
        let upto = create_requests::created_at.le(Timestamp(nth_oldest.unwrap_or(before)));
        crate::db::db_run!(conn => {
            diesel_async::RunQueryDsl::execute(
                diesel::delete(create_requests::table.filter(upto)),
                conn,
            )
            .await
        })
    }
}
