//! Persistence: services never build SQL, and never know which backend they
//! talk to: PostgreSQL (production) or an embedded SQLite file (the
//! zero-setup default), chosen by `DATABASE_URL`.
//!
//! - `target`: which store `DATABASE_URL` selects, and how to log it.
//! - `pool`: the shared [`Database`] handle, one pool builder for both.
//! - `connection`: [`DbConnection`], [`db_run!`] and transactions. Each
//!   query is written once, inside `db_run!`, which compiles it for both
//!   backends and runs the one matching the connection (as vaultwarden does).
//! - `migrate`: embedded migrations per backend.
//! - `listen`: LISTEN/NOTIFY cache invalidation between replicas.
//! - `tls`: [`PgConnector`], every PostgreSQL connection with the TLS its
//!   URL's `sslmode` and `sslrootcert` ask for, as libpq reads them.
//! - `write`: [`write`], the one shape of a change: its statements, audit
//!   records and invalidation commit together.
//! - [`sql_types`]: column types meaning the same on both backends, and the
//!   domain's typed ids as column values.
//! - [`models`]: one module per table, holding every query; [`schema`]:
//!   the tables, kept by hand (tests/api/schema.rs checks it against both
//!   migration sets).

mod connection;
mod listen;
mod migrate;
pub mod models;
mod pool;
mod prepared_once;
pub mod retention;
pub mod schema;
pub mod sql_types;
mod target;
mod tls;
mod write;

pub(crate) use connection::in_a_trace;
pub(crate) use connection::{db_run, db_span, query_span};
pub use connection::{ping, DbConnection, SqliteAsyncConnection};
pub use listen::{
    listen_for_invalidations, notify_invalidation, BarrierRequest, Invalidation, ListenEvent,
    CHATBOT_CHANGES_CHANNEL, INVALIDATION_CHANNEL, KEY_ANNOUNCEMENT_CHANNEL,
};
pub use migrate::{back_up, revert_last_migration, run_migrations, schema_version};
pub use pool::{Database, PoolError, PoolSettings};
pub use prepared_once::PreparedOnce;
pub use target::{DatabaseTarget, ServeLock};
pub use tls::{PgConnectError, PgConnector};
pub use write::{insert, write, write_in, Written};

/// Whether `error` is a foreign key refusing a change: PostgreSQL's or
/// SQLite's own, or one of the triggers that stand in for a foreign key on
/// SQLite (`chatbots.organization_id`; see the organizations migration).
pub fn is_foreign_key_violation(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => true,
        Error::DatabaseError(_, info) => info.message() == "FOREIGN KEY constraint failed",
        _ => false,
    }
}
