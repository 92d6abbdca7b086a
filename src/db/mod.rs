//! Persistence: the connection pool, embedded migrations and one model module
//! per table holding every query. Services never build SQL, and never know
//! which backend they talk to: PostgreSQL (production) or an embedded SQLite
//! file (the zero-setup default), chosen by `DATABASE_URL`.
//!
//! Each query is written once, inside [`db_run!`], which compiles it for
//! both backends and runs the one matching the connection (the pattern
//! vaultwarden uses).

mod listen;
pub mod models;
pub mod schema;
/// Kept under `db` too, where the models and schema look for them.
pub use crate::sql_types;

pub use listen::{
    listen_for_invalidations, notify_invalidation, Invalidation, ListenEvent, INVALIDATION_CHANNEL,
};

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use diesel::connection::InstrumentationEvent;
use diesel::sql_types::Text;
use diesel::sqlite::SqliteConnection;
use diesel::{ConnectionError, QueryableByName};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::scoped_futures::ScopedBoxFuture;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{
    AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection, TransactionManager,
};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// SQLite behind diesel-async: each statement runs on a blocking thread.
pub type SqliteAsyncConnection = SyncConnectionWrapper<SqliteConnection>;
/// Why a connection could not be had from the pool.
pub type PoolError = diesel_async::pooled_connection::deadpool::PoolError;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Runs `$body` with `$conn` rebound from `&mut DbConnection` to the concrete
/// connection of its backend. The body is compiled once per backend, so a
/// query that one backend cannot run fails to compile rather than at run time.
macro_rules! db_run {
    ($conn:ident => $body:expr) => {
        match $conn {
            $crate::db::DbConnection::Postgres(pooled) => {
                let $conn: &mut ::diesel_async::AsyncPgConnection = &mut *pooled;
                $body
            }
            $crate::db::DbConnection::Sqlite(pooled) => {
                let $conn: &mut $crate::db::SqliteAsyncConnection = &mut *pooled;
                $body
            }
        }
    };
}
pub(crate) use db_run;

/// Which store a `DATABASE_URL` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// A `postgres://` or `postgresql://` URL, passed to PostgreSQL as is.
    Postgres(String),
    /// A file path, from `sqlite://PATH`, `sqlite:PATH` or a bare path.
    Sqlite(PathBuf),
}

impl DatabaseTarget {
    /// Parses `DATABASE_URL`.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        anyhow::ensure!(
            !path.contains("://"),
            "DATABASE_URL must be a postgres:// URL, a sqlite:// URL or a file path"
        );
        anyhow::ensure!(!path.is_empty(), "DATABASE_URL names no SQLite file");
        // Every pooled connection would get its own empty in-memory database.
        anyhow::ensure!(
            !path.starts_with(":memory:") && !path.contains("mode=memory"),
            "in-memory SQLite databases cannot be shared by a connection pool; name a file"
        );
        Ok(Self::Sqlite(PathBuf::from(path)))
    }

    /// The backend's name, as logged and reported by GetDatabaseStatus.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgresql",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Where the data lives, without credentials, for the log.
    pub fn redacted(&self) -> String {
        match self {
            Self::Postgres(url) => match url::Url::parse(url) {
                Ok(mut parsed) => {
                    let _ = parsed.set_password(None);
                    parsed.to_string()
                }
                Err(_) => "postgres://(unparsable URL)".into(),
            },
            Self::Sqlite(path) => path.display().to_string(),
        }
    }

    fn sqlite_path(path: &std::path::Path) -> anyhow::Result<String> {
        path.to_str()
            .map(str::to_owned)
            .context("the SQLite path is not valid UTF-8")
    }
}

/// Calls `$method` of the connection's own transaction manager, which
/// tracks the transaction state (so the pool discards a connection left
/// mid-transaction).
macro_rules! with_transaction_manager {
    ($conn:expr, $method:ident) => {
        match $conn {
            DbConnection::Postgres(c) => {
                <AsyncPgConnection as AsyncConnection>::TransactionManager::$method(&mut **c).await
            }
            DbConnection::Sqlite(c) => {
                <SqliteAsyncConnection as AsyncConnection>::TransactionManager::$method(&mut **c)
                    .await
            }
        }
    };
}

/// A pooled connection to either backend. Model queries take
/// `&mut DbConnection` and dispatch with [`db_run!`].
pub enum DbConnection {
    Postgres(Object<AsyncPgConnection>),
    Sqlite(Object<SqliteAsyncConnection>),
}

impl fmt::Debug for DbConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(_) => f.write_str("DbConnection::Postgres"),
            Self::Sqlite(_) => f.write_str("DbConnection::Sqlite"),
        }
    }
}

impl DbConnection {
    /// Runs `callback` in a transaction: committed if it returns `Ok`,
    /// rolled back otherwise. A connection dropped mid-transaction (a
    /// cancelled RPC) is marked broken and discarded by the pool.
    pub async fn transaction<'a, R, E, F>(&mut self, callback: F) -> Result<R, E>
    where
        F: for<'r> FnOnce(&'r mut DbConnection) -> ScopedBoxFuture<'a, 'r, Result<R, E>>
            + Send
            + 'a,
        E: From<diesel::result::Error> + Send + 'a,
        R: Send + 'a,
    {
        self.begin().await?;
        match callback(&mut *self).await {
            Ok(value) => {
                self.commit().await?;
                Ok(value)
            }
            Err(error) => match self.rollback().await {
                Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(error),
                Err(rollback_error) => Err(rollback_error.into()),
            },
        }
    }

    async fn begin(&mut self) -> diesel::QueryResult<()> {
        with_transaction_manager!(self, begin_transaction)
    }

    async fn commit(&mut self) -> diesel::QueryResult<()> {
        with_transaction_manager!(self, commit_transaction)
    }

    async fn rollback(&mut self) -> diesel::QueryResult<()> {
        with_transaction_manager!(self, rollback_transaction)
    }
}

/// Pool limits and timeouts.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_size: usize,
    /// How long a request waits for a free connection before UNAVAILABLE.
    pub acquire_timeout: Duration,
    /// How long opening a new connection may take.
    pub connect_timeout: Duration,
    /// Bound on one statement: PostgreSQL's `statement_timeout`; SQLite's
    /// `busy_timeout` (how long a writer waits for the file lock).
    pub statement_timeout: Duration,
}

#[derive(Clone)]
enum DbPool {
    Postgres(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteAsyncConnection>),
}

/// The shared handle to the database.
#[derive(Clone)]
pub struct Database {
    pool: DbPool,
    backend_name: &'static str,
    statements: Arc<AtomicU64>,
}

/// Counts statements on a connection (see [`Database::statements_executed`]).
fn count_statements(counter: Arc<AtomicU64>) -> impl diesel::connection::Instrumentation {
    move |event: InstrumentationEvent<'_>| {
        if matches!(event, InstrumentationEvent::StartQuery { .. }) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Database {
    /// Builds the pool lazily: no connection is opened until one is needed,
    /// so the server can start while the database is still coming up.
    pub fn new(target: &DatabaseTarget, settings: &PoolSettings) -> anyhow::Result<Self> {
        let statements = Arc::new(AtomicU64::new(0));
        let pool = match target {
            DatabaseTarget::Postgres(url) => {
                DbPool::Postgres(postgres_pool(url, settings, statements.clone())?)
            }
            DatabaseTarget::Sqlite(path) => DbPool::Sqlite(sqlite_pool(
                &DatabaseTarget::sqlite_path(path)?,
                settings,
                statements.clone(),
            )?),
        };
        Ok(Self {
            pool,
            backend_name: target.backend_name(),
            statements,
        })
    }

    /// `postgresql` or `sqlite`.
    pub fn backend_name(&self) -> &'static str {
        self.backend_name
    }

    /// Statements sent through this pool since it was built: lets tests
    /// prove that a path does not touch the database.
    pub fn statements_executed(&self) -> u64 {
        AtomicU64::load(&self.statements, Ordering::Relaxed)
    }

    /// A connection from the pool, or UNAVAILABLE after the acquire timeout.
    pub async fn conn(&self) -> Result<DbConnection, PoolError> {
        match &self.pool {
            DbPool::Postgres(pool) => pool.get().await.map(DbConnection::Postgres),
            DbPool::Sqlite(pool) => sqlite_checkout(pool).await.map(DbConnection::Sqlite),
        }
    }

    /// Pool occupancy, for metrics and status.
    pub fn pool_status(&self) -> deadpool::Status {
        match &self.pool {
            DbPool::Postgres(pool) => pool.status(),
            DbPool::Sqlite(pool) => pool.status(),
        }
    }

    /// Refuses new checkouts and drops idle connections.
    pub fn close(&self) {
        match &self.pool {
            DbPool::Postgres(pool) => pool.close(),
            DbPool::Sqlite(pool) => pool.close(),
        }
    }
}

fn postgres_pool(
    url: &str,
    settings: &PoolSettings,
    statements: Arc<AtomicU64>,
) -> anyhow::Result<Pool<AsyncPgConnection>> {
    let statement_timeout_ms = settings.statement_timeout.as_millis();
    let connect_timeout = settings.connect_timeout;
    let mut config = ManagerConfig::default();
    // A broken connection is detected by its error; a test query on
    // every checkout would double the round trips of every RPC.
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        let statements = statements.clone();
        Box::pin(async move {
            let mut conn =
                tokio::time::timeout(connect_timeout, AsyncPgConnection::establish(&url))
                    .await
                    .map_err(|_| ConnectionError::BadConnection("connect timed out".into()))??;
            diesel::sql_query(format!("SET statement_timeout = {statement_timeout_ms}"))
                .execute(&mut conn)
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            conn.set_instrumentation(count_statements(statements));
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    Pool::builder(manager)
        .max_size(settings.max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(settings.acquire_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .build()
        .context("building the database pool")
}

/// Settings every SQLite connection gets: WAL so readers never block the
/// writer, a bounded wait for the write lock instead of an immediate
/// SQLITE_BUSY, and foreign keys (off by default in SQLite) for the cascades.
fn sqlite_pragmas(busy_timeout: Duration) -> String {
    format!(
        "PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; \
         PRAGMA foreign_keys = ON; \
         PRAGMA busy_timeout = {};",
        busy_timeout.as_millis()
    )
}

fn sqlite_pool(
    path: &str,
    settings: &PoolSettings,
    statements: Arc<AtomicU64>,
) -> anyhow::Result<Pool<SqliteAsyncConnection>> {
    let pragmas = sqlite_pragmas(settings.statement_timeout);
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |path| {
        let path = path.to_owned();
        let pragmas = pragmas.clone();
        let statements = statements.clone();
        Box::pin(async move {
            let mut conn = SqliteAsyncConnection::establish(&path).await?;
            conn.batch_execute(&pragmas)
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            conn.set_instrumentation(count_statements(statements));
            Ok(conn)
        })
    });
    let manager =
        AsyncDieselConnectionManager::<SqliteAsyncConnection>::new_with_config(path, config);
    Pool::builder(manager)
        .max_size(settings.max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(settings.acquire_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .build()
        .context("building the SQLite pool")
}

/// Checks out a SQLite connection, passing over ones a cancelled RPC left
/// unusable. A SQLite statement runs on a blocking thread; when its RPC is
/// cancelled mid-statement, the connection goes back to the pool while that
/// thread still shares it, and checking it out again panics inside
/// diesel-async (diesel_async#281). deadpool drops a connection whose
/// checkout panicked, so the next attempt gets another (or a new) one; the
/// abandoned one closes once its statement ends.
async fn sqlite_checkout(
    pool: &Pool<SqliteAsyncConnection>,
) -> Result<Object<SqliteAsyncConnection>, PoolError> {
    use futures_util::FutureExt;
    // Every pooled connection could be an abandoned one, once.
    let attempts = pool.status().max_size + 1;
    for _ in 1..attempts {
        match std::panic::AssertUnwindSafe(pool.get())
            .catch_unwind()
            .await
        {
            Ok(checked_out) => return checked_out,
            Err(_) => tracing::warn!(
                "passed over a SQLite connection still busy with a cancelled statement"
            ),
        }
    }
    pool.get().await
}

/// Applies pending migrations, creating the database first if it does not
/// exist (a PostgreSQL database of that name, or the SQLite file), so a
/// fresh machine needs no setup; returns the versions applied.
pub async fn run_migrations(target: &DatabaseTarget) -> anyhow::Result<Vec<String>> {
    fn apply<DB: diesel::backend::Backend>(
        conn: &mut impl MigrationHarness<DB>,
        migrations: EmbeddedMigrations,
    ) -> anyhow::Result<Vec<String>> {
        let applied = conn
            .run_pending_migrations(migrations)
            .map_err(|e| anyhow::anyhow!("applying migrations: {e}"))?;
        Ok(applied.iter().map(ToString::to_string).collect())
    }
    match target {
        DatabaseTarget::Postgres(url) => {
            create_database_if_missing(url).await?;
            with_postgres_migration_connection(url, |conn| apply(conn, POSTGRES_MIGRATIONS)).await
        }
        DatabaseTarget::Sqlite(path) => {
            with_sqlite_migration_connection(path, |conn| apply(conn, SQLITE_MIGRATIONS)).await
        }
    }
}

/// Reverts the newest applied migration; returns its version.
pub async fn revert_last_migration(target: &DatabaseTarget) -> anyhow::Result<String> {
    fn revert<DB: diesel::backend::Backend>(
        conn: &mut impl MigrationHarness<DB>,
        migrations: EmbeddedMigrations,
    ) -> anyhow::Result<String> {
        conn.revert_last_migration(migrations)
            .map(|version| version.to_string())
            .map_err(|e| anyhow::anyhow!("reverting the last migration: {e}"))
    }
    match target {
        DatabaseTarget::Postgres(url) => {
            with_postgres_migration_connection(url, |conn| revert(conn, POSTGRES_MIGRATIONS)).await
        }
        DatabaseTarget::Sqlite(path) => {
            with_sqlite_migration_connection(path, |conn| revert(conn, SQLITE_MIGRATIONS)).await
        }
    }
}

async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let error = match AsyncPgConnection::establish(url).await {
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    if !error.to_string().contains("does not exist") {
        return Err(anyhow::Error::from(error).context("connecting to the database"));
    }
    let mut parsed = url::Url::parse(url).context("DATABASE_URL is not a URL")?;
    let name = parsed.path().trim_start_matches('/').to_owned();
    anyhow::ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "database {name:?} does not exist and its name is not one to create automatically"
    );
    parsed.set_path("/postgres");
    let mut admin = AsyncPgConnection::establish(parsed.as_str())
        .await
        .context("connecting to the `postgres` database to create the service's database")?;
    match diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
    {
        Ok(_) => tracing::info!(database = %name, "created database"),
        // Another replica created it first.
        Err(diesel::result::Error::DatabaseError(_, info))
            if info.message().contains("already exists") => {}
        Err(error) => return Err(anyhow::Error::from(error).context("creating the database")),
    }
    Ok(())
}

/// diesel_migrations is synchronous: it runs on a blocking thread over the
/// async connection wrapped as a sync one.
async fn with_postgres_migration_connection<T: Send + 'static>(
    url: &str,
    work: impl FnOnce(&mut AsyncConnectionWrapper<AsyncPgConnection>) -> anyhow::Result<T>
        + Send
        + 'static,
) -> anyhow::Result<T> {
    let conn = AsyncPgConnection::establish(url)
        .await
        .context("connecting to the database to migrate it")?;
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        work(&mut conn)
    })
    .await
    .context("migration task panicked")?
}

/// SQLite migrates over a plain synchronous connection on a blocking thread;
/// opening the file creates it (and its directory is created here).
async fn with_sqlite_migration_connection<T: Send + 'static>(
    path: &std::path::Path,
    work: impl FnOnce(&mut SqliteConnection) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    use diesel::connection::{Connection, SimpleConnection};

    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the directory of {}", path.display()))?;
    }
    let path = DatabaseTarget::sqlite_path(path)?;
    tokio::task::spawn_blocking(move || {
        let mut conn = SqliteConnection::establish(&path)
            .with_context(|| format!("opening the SQLite database {path}"))?;
        conn.batch_execute(&sqlite_pragmas(Duration::from_secs(5)))
            .context("configuring the SQLite database")?;
        work(&mut conn)
    })
    .await
    .context("migration task panicked")?
}

#[derive(QueryableByName)]
struct SchemaVersion {
    #[diesel(sql_type = Text)]
    version: String,
}

/// Newest applied migration version, if any.
pub async fn schema_version(conn: &mut DbConnection) -> diesel::QueryResult<Option<String>> {
    let rows: Vec<SchemaVersion> = db_run!(conn => {
        diesel::sql_query(
            "SELECT version FROM __diesel_schema_migrations ORDER BY version DESC LIMIT 1",
        )
        .load(conn)
        .await?
    });
    Ok(rows.into_iter().next().map(|row| row.version))
}

#[derive(QueryableByName)]
struct ServerVersion {
    #[diesel(sql_type = Text)]
    server_version: String,
}

/// One round trip that proves the database answers; returns the server's
/// (or the embedded library's) version.
pub async fn ping(conn: &mut DbConnection) -> diesel::QueryResult<String> {
    // The one query that differs by backend: each names its version its
    // own way.
    let query = match conn {
        DbConnection::Postgres(_) => "SELECT current_setting('server_version') AS server_version",
        DbConnection::Sqlite(_) => "SELECT sqlite_version() AS server_version",
    };
    let row: ServerVersion = db_run!(conn => diesel::sql_query(query).get_result(conn).await?);
    Ok(row.server_version)
}

#[cfg(test)]
mod tests {
    use super::DatabaseTarget;
    use std::path::PathBuf;

    #[test]
    fn postgres_urls_select_postgres() {
        for url in ["postgres://u@h/db", "postgresql://u:p@h:5432/db"] {
            assert_eq!(
                DatabaseTarget::parse(url).unwrap(),
                DatabaseTarget::Postgres(url.into())
            );
        }
    }

    #[test]
    fn sqlite_urls_and_bare_paths_select_sqlite() {
        for (url, path) in [
            ("sqlite://chatbot-backend.db", "chatbot-backend.db"),
            ("sqlite:data/app.db", "data/app.db"),
            ("sqlite:///var/lib/app.db", "/var/lib/app.db"),
            ("/tmp/app.sqlite3", "/tmp/app.sqlite3"),
        ] {
            assert_eq!(
                DatabaseTarget::parse(url).unwrap(),
                DatabaseTarget::Sqlite(PathBuf::from(path))
            );
        }
    }

    #[test]
    fn memory_databases_empty_paths_and_other_schemes_are_refused() {
        for url in [
            "sqlite::memory:",
            ":memory:",
            "sqlite://",
            "",
            "mysql://u@h/db",
        ] {
            assert!(DatabaseTarget::parse(url).is_err(), "{url:?} was accepted");
        }
    }

    #[test]
    fn the_logged_postgres_location_hides_the_password() {
        let target = DatabaseTarget::parse("postgres://app:hunter2@db:5432/chatbot").unwrap();
        assert!(!target.redacted().contains("hunter2"));
        assert!(target.redacted().contains("db:5432/chatbot"));
    }
}
