//! The `users` table.

use std::fmt;

use chrono::{DateTime, Utc};
use diesel::{
    AsChangeset, ExpressionMethods, Insertable, QueryDsl, Queryable, Selectable, SelectableHelper,
};
use diesel_async::RunQueryDsl;

use crate::db::schema::users;
use crate::db::sql_types::Timestamp;
use crate::db::{db_run, DbConnection};
use crate::domain::{PageRequest, Role, UserId};

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
#[diesel(treat_none_as_default_value = false)] // see db::models: prepared once
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

// Users by id; deleting one takes its chatbots, keys and refresh tokens
// with it (by cascade).
resource_table!(User in users, id UserId, new NewUser<'_>, changes &UserChanges);

impl User {
    pub fn role(&self) -> Role {
        // The CHECK constraint admits only these two values.
        self.role.parse().unwrap_or(Role::User)
    }

    /// `email` must already be normalised (lowercase).
    pub async fn find_by_email(
        conn: &mut DbConnection,
        email: &str,
    ) -> diesel::QueryResult<Option<User>> {
        first_row!(
            conn,
            users::table
                .filter(users::email.eq(email))
                .select(User::as_select())
        )
    }

    /// Locks the user's row until the transaction ends (a no-op write,
    /// which SQLite can also lock); whether the user exists.
    pub async fn lock(conn: &mut DbConnection, id: UserId) -> diesel::QueryResult<bool> {
        let touch = users::updated_at.eq(users::updated_at);
        Ok(update_rows!(conn, users::table.find(id), touch)? == 1)
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
        let unchanged = users::table
            .find(id)
            .filter(users::hashed_password.eq(hashed_password));
        Ok(update_rows!(conn, unchanged, users::updated_at.eq(users::updated_at))? == 1)
    }

    /// Replaces the user's password hash with `new_hash` (the same password
    /// at the current cost) if it is still `checked_hash`, locking the row
    /// as [`Self::lock_if_password_unchanged`] does; whether it was.
    pub async fn upgrade_hash_if_unchanged(
        conn: &mut DbConnection,
        id: UserId,
        checked_hash: &str,
        new_hash: &str,
    ) -> diesel::QueryResult<bool> {
        let unchanged = users::table
            .find(id)
            .filter(users::hashed_password.eq(checked_hash));
        Ok(update_rows!(conn, unchanged, users::hashed_password.eq(new_hash))? == 1)
    }

    /// One page in (created_at, id) order, plus one extra row if more follow.
    pub async fn list(
        conn: &mut DbConnection,
        page: &PageRequest<UserId>,
    ) -> diesel::QueryResult<Vec<User>> {
        db_run!(conn => {
            keyset_page!(users, User, page).load(conn).await
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
