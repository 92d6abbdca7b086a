//! The `login_attempts` table: the login throttle's budgets, shared by every
//! replica. A password is checked only after a budget was reserved here, so
//! concurrency and replicas cannot multiply the guesses.

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::RunQueryDsl;

use crate::db::schema::login_attempts;
use crate::db::sql_types::Timestamp;
use crate::db::{db_run, DbConnection};

/// A subject's window after a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub started: DateTime<Utc>,
    /// Checks in the window that did not succeed, this one included.
    pub attempts: i32,
}

pub struct LoginAttempt;

impl LoginAttempt {
    /// Counts one more password check for `subject` in its window, starting
    /// a new window if the last one began at or before `window_ended_at`.
    /// Atomic per statement, so concurrent reservations each get their own
    /// count; the caller's transaction orders the two statements.
    pub async fn reserve(
        conn: &mut DbConnection,
        subject: &[u8],
        now: DateTime<Utc>,
        window_ended_at: DateTime<Utc>,
    ) -> diesel::QueryResult<Window> {
        db_run!(conn => {
            let ended = login_attempts::table
                .find(subject)
                .filter(login_attempts::window_start.le(Timestamp(window_ended_at)));
            let restart = diesel::update(ended).set((
                login_attempts::window_start.eq(Timestamp(now)),
                login_attempts::attempts.eq(0),
            ));
            crate::db::PreparedOnce(restart).execute(conn).await?;
            let count = diesel::insert_into(login_attempts::table)
                .values((
                    login_attempts::subject.eq(subject),
                    login_attempts::window_start.eq(Timestamp(now)),
                    login_attempts::attempts.eq(1),
                ))
                .on_conflict(login_attempts::subject)
                .do_update()
                .set(login_attempts::attempts.eq(login_attempts::attempts + 1))
                .returning((login_attempts::window_start, login_attempts::attempts));
            let (started, attempts) = crate::db::PreparedOnce(count)
                .get_result::<(DateTime<Utc>, i32)>(conn)
                .await?;
            Ok(Window { started, attempts })
        })
    }

    /// Gives back a reservation whose password was right, if its window is
    /// still the current one.
    pub async fn refund(
        conn: &mut DbConnection,
        subject: &[u8],
        window_started: DateTime<Utc>,
    ) -> diesel::QueryResult<()> {
        db_run!(conn => {
            diesel::update(
                login_attempts::table
                    .find(subject)
                    .filter(login_attempts::window_start.eq(Timestamp(window_started)))
                    .filter(login_attempts::attempts.gt(0)),
            )
            .set(login_attempts::attempts.eq(login_attempts::attempts - 1))
            .execute(conn)
            .await
            .map(drop)
        })
    }

    /// Deletes up to `limit` windows that ended, so the table holds only
    /// the current ones; returns how many went. A window restarted since
    /// it was read is kept (the delete checks its start again).
    pub async fn purge_ended(
        conn: &mut DbConnection,
        window_ended_at: DateTime<Utc>,
        limit: i64,
    ) -> diesel::QueryResult<usize> {
        let ended = login_attempts::window_start.le(Timestamp(window_ended_at));
        db_run!(conn => {
            let subjects: Vec<Vec<u8>> = login_attempts::table
                .filter(ended)
                .select(login_attempts::subject)
                .limit(limit)
                .load(conn)
                .await?;
            diesel::delete(
                login_attempts::table
                    .filter(login_attempts::subject.eq_any(subjects))
                    .filter(ended),
            )
            .execute(conn)
            .await
        })
    }
}
