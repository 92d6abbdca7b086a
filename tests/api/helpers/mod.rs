//! The test harness: `spawn_app()` gets a fresh database, starts the
//! server on port 0 and hands out typed clients; dropping the app stops the
//! server and gives the database back. [`backend_test!`] runs a test once
//! on PostgreSQL and once on SQLite.
//!
//! Two things keep the suite fast as it grows. Fresh databases come from a
//! template migrated once per migration set: on SQLite a copy of its file,
//! on PostgreSQL an emptied database leased from a pool made from it (see
//! [`TestDatabase::create`]); no test migrates, creates or drops a database
//! unless it is about that. And servers hash passwords at argon2's cheapest
//! cost unless a test needs the production cost
//! ([`spawn_app_with_production_hash_cost`]).
//!
//! What lives where: `app` starts a server, `database` and `templates` make
//! its database, `clients` calls it, `requests` builds the requests several
//! files send, `reservations` reserves and settles credits, `fixtures` makes the users, chatbots and keys a test starts
//! from, `polling` waits for an answer to change, `process` runs the real
//! binary, `proxy` cuts or garbles a connection, `pgbouncer` runs a real
//! PgBouncer, `tls` a PostgreSQL and a Redis with certificates of the
//! test's own, `metrics` scrapes the metrics endpoint, `logs` keeps what the
//! servers logged, and `assertions` checks a status.

mod app;
mod assertions;
mod clients;
mod database;
mod fixtures;
mod logs;
mod metrics;
mod pgbouncer;
mod polling;
mod process;
mod proxy;
mod requests;
mod reservations;
mod templates;
mod tls;

pub use app::{
    spawn_app, spawn_app_behind_postgres_proxy, spawn_app_behind_postgres_proxy_with, spawn_app_on,
    spawn_app_with, spawn_app_with_production_hash_cost, TestApp,
};
pub use assertions::{assert_code, clock_hour, repeats_by_attempt, violated_fields};
pub use clients::{verify_costing, Authed, Bearer, Clients};
pub use database::{finish_in_drop, TestDatabase};
pub use fixtures::{KeyOwner, TestUser};
pub use logs::logs;
pub use metrics::{metric_value, scrape};
pub use pgbouncer::PgBouncer;
pub use polling::{changed_within_a_second, eventually, poll_until};
pub use process::{
    create_keys_through_both, migrate, run_command, server_command, serving_addr,
    spawn_logging_json, ReplicaProcess,
};
pub use proxy::TcpProxy;
pub use requests::{
    api_key_update, chatbot_update, email_change, field_mask, password_change, role_change,
};
pub use reservations::{reserve, reserve_and_settle_across, settle};
pub use tls::{TempDir, TlsFiles, TlsPostgres, TlsRedis};

use std::future::Future;

use chatbot_backend::auth::HashCost;

/// The store a test's server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

tokio::task_local! {
    static BACKEND: Backend;
}

impl Backend {
    /// The backend of the running test; PostgreSQL for tests declared
    /// without [`backend_test!`].
    pub fn current() -> Self {
        BACKEND
            .try_with(|backend| *backend)
            .unwrap_or(Backend::Postgres)
    }

    /// Runs `test` with this backend as [`Backend::current`].
    pub async fn run<F: Future>(self, test: F) -> F::Output {
        BACKEND.scope(self, test).await
    }

    /// The name GetDatabaseStatus reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgresql",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Declares a test twice, as `<name>::postgres` and `<name>::sqlite`, each
/// on a fresh database of that backend. A test that only makes sense on one
/// backend is a plain `#[tokio::test]` whose name says which.
macro_rules! backend_test {
    (async fn $name:ident() $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body() $body

            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                $crate::helpers::Backend::Postgres.run(body()).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                $crate::helpers::Backend::Sqlite.run(body()).await
            }
        }
    };
}
pub(crate) use backend_test;

/// The signing key every test server (in process or not) is started with.
pub const SECRET_KEY: &str = "test-secret-key-that-is-at-least-32-bytes-long";
/// The password of the users and admins [`TestApp::new_user`] and
/// [`TestApp::new_admin`] make.
pub const PASSWORD: &str = "correct horse battery staple";

/// argon2's cheapest parameters: a hash takes microseconds instead of tens
/// of milliseconds (more on a busy machine, where the hashing threads' low
/// priority starves them), which dominated the suite's run time.
pub const TEST_HASH_COST: HashCost = HashCost {
    memory_kib: 8,
    iterations: 1,
};
