//! One module per table: the row type, its insert/changeset types and every
//! query on that table, as associated functions taking the connection.
//! What the resource tables (users, chatbots, API keys) share is written
//! once, in `resource_table!` and `keyset_page!` (defined before the modules, so in scope in each).
//!
//! Every insert type says `treat_none_as_default_value = false`: a `None`
//! is inserted as NULL (no such column has another default). diesel's
//! default writes each field as "value or DEFAULT", and a statement whose
//! text may vary like that is never cached, so every insert was prepared
//! anew: one more round trip, and a parse and plan in PostgreSQL, per row
//! written. Now each is prepared once per connection.

/// The queries every resource table has: `find` by id, `delete` (whether a
/// row went), `count`, and `cursor` (where a page ending at this row
/// resumes). With `new` and `changes`, for tables that keep `updated_at`,
/// also `insert` and `update`, which stamp the times.
macro_rules! resource_table {
    ($model:ident in $table:ident, id $id:ty $(, new $new:ty, changes $changes:ty)?) => {
        impl $model {
            pub fn cursor(&self) -> $crate::domain::PageCursor<$id> {
                $crate::domain::PageCursor { create_time: self.created_at, id: self.id }
            }

            pub async fn find(
                conn: &mut $crate::db::DbConnection,
                id: $id,
            ) -> ::diesel::QueryResult<Option<$model>> {
                use ::diesel::{OptionalExtension, QueryDsl, SelectableHelper};
                use ::diesel_async::RunQueryDsl;
                $crate::db::db_run!(conn => {
                    $table::table.find(id).select($model::as_select()).first(conn).await.optional()
                })
            }

            pub async fn delete(
                conn: &mut $crate::db::DbConnection,
                id: $id,
            ) -> ::diesel::QueryResult<bool> {
                use ::diesel::QueryDsl;
                use ::diesel_async::RunQueryDsl;
                $crate::db::db_run!(conn => {
                    Ok(::diesel::delete($table::table.find(id)).execute(conn).await? > 0)
                })
            }

            pub async fn count(conn: &mut $crate::db::DbConnection) -> ::diesel::QueryResult<i64> {
                use ::diesel::QueryDsl;
                use ::diesel_async::RunQueryDsl;
                $crate::db::db_run!(conn => { $table::table.count().get_result(conn).await })
            }

            $(
            pub async fn insert(
                conn: &mut $crate::db::DbConnection,
                new: $new,
            ) -> ::diesel::QueryResult<$model> {
                use ::diesel::{ExpressionMethods, SelectableHelper};
                use ::diesel_async::RunQueryDsl;
                let now = $crate::db::sql_types::Timestamp::now();
                $crate::db::db_run!(conn => {
                    ::diesel::insert_into($table::table)
                        .values((new, $table::created_at.eq(now), $table::updated_at.eq(now)))
                        .returning($model::as_returning())
                        .get_result(conn)
                        .await
                })
            }

            pub async fn update(
                conn: &mut $crate::db::DbConnection,
                id: $id,
                changes: $changes,
            ) -> ::diesel::QueryResult<Option<$model>> {
                use ::diesel::{ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
                use ::diesel_async::RunQueryDsl;
                let now = $crate::db::sql_types::Timestamp::now();
                $crate::db::db_run!(conn => {
                    let update = ::diesel::update($table::table.find(id))
                        .set((changes, $table::updated_at.eq(now)))
                        .returning($model::as_returning());
                    $crate::db::PreparedOnce(update).get_result(conn).await.optional()
                })
            }
            )?
        }
    };
}

/// `UPDATE $rows SET $changes` on either backend (prepared once per
/// PostgreSQL connection, see [`crate::db::PreparedOnce`]): how many rows
/// changed.
/// `$rows` (a table, or a filtered one) does not depend on the backend,
/// so it is built outside the dispatch.
macro_rules! update_rows {
    ($conn:ident, $rows:expr, $changes:expr) => {{
        use ::diesel_async::RunQueryDsl;
        let rows = $rows;
        let changes = $changes;
        $crate::db::db_run!($conn => {
            $crate::db::PreparedOnce(::diesel::update(rows).set(changes)).execute($conn).await
        })
    }};
}

/// Runs a select on either backend: its first row, if any. `$query` is
/// expanded once per backend, since `as_select()` is typed by backend.
macro_rules! first_row {
    ($conn:ident, $query:expr) => {{
        use ::diesel::OptionalExtension;
        use ::diesel_async::RunQueryDsl;
        $crate::db::db_run!($conn => { $query.first($conn).await.optional() })
    }};
}

/// Like `first_row!`, but every row.
macro_rules! all_rows {
    ($conn:ident, $query:expr) => {{
        use ::diesel_async::RunQueryDsl;
        $crate::db::db_run!($conn => { $query.load($conn).await })
    }};
}

/// One page of `$table` in (created_at, id) order, resuming after the
/// page's cursor, with one row more than the page so the caller knows
/// whether more follow: a boxed query the caller may filter further.
/// Used inside `db_run!`, which fixes the backend.
macro_rules! keyset_page {
    ($table:ident, $model:ident, $page:expr) => {{
        use ::diesel::{BoolExpressionMethods, ExpressionMethods, QueryDsl, SelectableHelper};
        let page = $page;
        let mut query = $table::table
            .select($model::as_select())
            .order(($table::created_at.asc(), $table::id.asc()))
            .limit(page.fetch_limit())
            .into_boxed();
        if let Some(after) = &page.after {
            let at = $crate::db::sql_types::Timestamp(after.create_time);
            query = query.filter(
                $table::created_at
                    .gt(at)
                    .or($table::created_at.eq(at).and($table::id.gt(after.id))),
            );
        }
        query
    }};
}

pub mod api_key;
pub mod audit_event;
pub mod chatbot;
pub mod create_request;
pub mod event;
pub mod key_limits;
pub mod lifecycle_notices;
pub mod login_attempt;
pub mod organization;
pub mod organization_limits;
pub mod refresh_token;
pub mod reservation;
pub mod service_account;
pub mod session;
pub mod usage;
pub mod user;
pub mod webhook;

pub use api_key::{ApiKey, EncodedAnswers, NewApiKey, StoredGrants, VerificationRecord};
pub use audit_event::{AuditActor, AuditEvent};
pub use chatbot::{Chatbot, ChatbotChanges, ChatbotFilter, NewChatbot};
pub use create_request::{CreateRequest, RequestKey};
pub use event::{EventPublication, OrganizationEvent};
pub use key_limits::{Balance, KeyLimitChanges, KeyLimits, KeyWithLimits};
pub use login_attempt::{LoginAttempt, Window};
pub use organization::{
    Invitation, Member, MemberWithEmail, NewInvitation, NewOrganization, Organization,
    OrganizationChanges,
};
pub use organization_limits::{OrganizationBalance, OrganizationLimits, OrganizationWithLimits};
pub use refresh_token::{NewRefreshToken, RefreshToken};
pub use reservation::{NewReservation, Reservation, ReservationFinish, ReservationState};
pub use service_account::{NewServiceAccount, ServiceAccount, ServiceAccountCredential};
pub use session::{LiveSession, Session};
pub use usage::{HourlyUsage, KeyUsage, UsageRow};
pub use user::{NewUser, User, UserChanges};
pub use webhook::{Attempt, NewWebhook, Webhook, WebhookChanges, WebhookDelivery};
