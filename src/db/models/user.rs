//! The `users` table.

use std::fmt;

use chrono::{DateTime, Utc};
use diesel::{
    AsChangeset, BoolExpressionMethods, ExpressionMethods, Insertable, OptionalExtension, QueryDsl,
    Queryable, Selectable, SelectableHelper,
};
use diesel_async::RunQueryDsl;

use crate::db::schema::users;
use crate::db::sql_types::Timestamp;
use crate::db::{db_run, DbConnection};
use crate::domain::{PageCursor, PageRequest, Role, UserId};

/// A row of `users`. Its `Debug` leaves out the password hash.
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub hashed_password: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// A user to insert.
#[derive(Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub id: UserId,
    pub email: &'a str,
    pub hashed_password: &'a str,
    pub role: &'a str,
}

/// Fields to change; `None` leaves a column alone. [`User::update`] sets
/// `updated_at` itself.
#[derive(AsChangeset, Default)]
#[diesel(table_name = users)]
pub struct UserChanges {
    pub email: Option<String>,
    pub hashed_password: Option<String>,
    pub role: Option<String>,
}

impl User {
    pub fn role(&self) -> Role {
        // The CHECK constraint admits only these two values.
        self.role.parse().unwrap_or(Role::User)
    }

    pub fn cursor(&self) -> PageCursor<UserId> {
        PageCursor {
            create_time: self.created_at,
            id: self.id,
        }
    }

    pub async fn insert(conn: &mut DbConnection, new: NewUser<'_>) -> diesel::QueryResult<User> {
        db_run!(conn => {
            let now = Timestamp::now();
            diesel::insert_into(users::table)
                .values((new, users::created_at.eq(now), users::updated_at.eq(now)))
                .returning(User::as_returning())
                .get_result(conn)
                .await
        })
    }

    pub async fn find(conn: &mut DbConnection, id: UserId) -> diesel::QueryResult<Option<User>> {
        db_run!(conn => {
            users::table
                .find(id)
                .select(User::as_select())
                .first(conn)
                .await
                .optional()
        })
    }

    /// `email` must already be normalised (lowercase).
    pub async fn find_by_email(
        conn: &mut DbConnection,
        email: &str,
    ) -> diesel::QueryResult<Option<User>> {
        db_run!(conn => {
            users::table
                .filter(users::email.eq(email))
                .select(User::as_select())
                .first(conn)
                .await
                .optional()
        })
    }

    /// Locks the user's row until the transaction ends if the password is
    /// still the one whose hash was checked (a no-op write, which SQLite can
    /// also lock). A login starts its session under this lock, so a password
    /// change either waits and then ends that session, or came first and
    /// the login fails.
    pub async fn lock_if_password_unchanged(
        conn: &mut DbConnection,
        id: UserId,
        hashed_password: &str,
    ) -> diesel::QueryResult<bool> {
        let locked = db_run!(conn => {
            diesel::update(
                users::table
                    .find(id)
                    .filter(users::hashed_password.eq(hashed_password)),
            )
            .set(users::updated_at.eq(users::updated_at))
            .execute(conn)
            .await
        })?;
        Ok(locked == 1)
    }

    /// One page in (created_at, id) order, plus one extra row if more follow.
    pub async fn list(
        conn: &mut DbConnection,
        page: &PageRequest<UserId>,
    ) -> diesel::QueryResult<Vec<User>> {
        db_run!(conn => {
            let mut query = users::table
                .select(User::as_select())
                .order((users::created_at.asc(), users::id.asc()))
                .limit(page.fetch_limit())
                .into_boxed();
            if let Some(after) = &page.after {
                query = query.filter(
                    users::created_at.gt(Timestamp(after.create_time)).or(users::created_at
                        .eq(Timestamp(after.create_time))
                        .and(users::id.gt(after.id))),
                );
            }
            query.load(conn).await
        })
    }

    /// Changes the email, role or password hash, and stamps `updated_at`.
    pub async fn update(
        conn: &mut DbConnection,
        id: UserId,
        changes: &UserChanges,
    ) -> diesel::QueryResult<Option<User>> {
        db_run!(conn => {
            diesel::update(users::table.find(id))
                .set((changes, users::updated_at.eq(Timestamp::now())))
                .returning(User::as_returning())
                .get_result(conn)
                .await
                .optional()
        })
    }

    /// Deletes the user; chatbots, keys and refresh tokens go by cascade.
    pub async fn delete(conn: &mut DbConnection, id: UserId) -> diesel::QueryResult<bool> {
        db_run!(conn => {
            let deleted = diesel::delete(users::table.find(id)).execute(conn).await?;
            Ok(deleted > 0)
        })
    }

    pub async fn count(conn: &mut DbConnection) -> diesel::QueryResult<i64> {
        db_run!(conn => {
            users::table.count().get_result(conn).await
        })
    }

    /// Creates an admin, or promotes an existing user and sets the password.
    pub async fn upsert_admin(
        conn: &mut DbConnection,
        email: &str,
        hashed_password: &str,
    ) -> diesel::QueryResult<User> {
        db_run!(conn => {
            let now = Utc::now();
            diesel::insert_into(users::table)
                .values((
                    NewUser {
                    id: UserId::generate(),
                    email,
                    hashed_password,
                    role: Role::Admin.as_str(),
                    },
                    users::created_at.eq(Timestamp(now)),
                    users::updated_at.eq(Timestamp(now)),
                ))
                .on_conflict(users::email)
                .do_update()
                .set((
                    UserChanges {
                        email: None,
                        hashed_password: Some(hashed_password.to_owned()),
                        role: Some(Role::Admin.as_str().to_owned()),
                    },
                    users::updated_at.eq(Timestamp(now)),
                ))
                .returning(User::as_returning())
                .get_result(conn)
                .await
        })
    }
}
