//! Persistence: the connection pool, embedded migrations and one model module
//! per table holding every query. Services never build SQL.

pub mod models;
pub mod schema;

use std::time::Duration;

use anyhow::Context;
use diesel::sql_types::Text;
use diesel::{ConnectionError, QueryableByName};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// The connection every model query takes.
pub type DbConnection = AsyncPgConnection;
/// A pooled connection; derefs to [`DbConnection`].
pub type PooledConnection = Object<AsyncPgConnection>;
/// Why a connection could not be had from the pool.
pub type PoolError = diesel_async::pooled_connection::deadpool::PoolError;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Name reported by the status RPC.
pub const BACKEND_NAME: &str = "postgresql";

/// Pool limits and timeouts.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_size: usize,
    /// How long a request waits for a free connection before UNAVAILABLE.
    pub acquire_timeout: Duration,
    /// How long opening a new connection may take.
    pub connect_timeout: Duration,
    /// Server-side `statement_timeout` set on every connection.
    pub statement_timeout: Duration,
}

/// The shared handle to the database.
#[derive(Clone)]
pub struct Database {
    pool: Pool<AsyncPgConnection>,
}

impl Database {
    /// Builds the pool lazily: no connection is opened until one is needed,
    /// so the server can start while the database is still coming up.
    pub fn new(url: &str, settings: &PoolSettings) -> anyhow::Result<Self> {
        let statement_timeout_ms = settings.statement_timeout.as_millis();
        let connect_timeout = settings.connect_timeout;
        let mut config = ManagerConfig::default();
        // A broken connection is detected by its error; a test query on
        // every checkout would double the round trips of every RPC.
        config.recycling_method = RecyclingMethod::Fast;
        config.custom_setup = Box::new(move |url| {
            let url = url.to_owned();
            Box::pin(async move {
                let mut conn =
                    tokio::time::timeout(connect_timeout, AsyncPgConnection::establish(&url))
                        .await
                        .map_err(|_| {
                            ConnectionError::BadConnection("connect timed out".into())
                        })??;
                diesel::sql_query(format!("SET statement_timeout = {statement_timeout_ms}"))
                    .execute(&mut conn)
                    .await
                    .map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            })
        });
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
        let pool = Pool::builder(manager)
            .max_size(settings.max_size)
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(settings.acquire_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .context("building the database pool")?;
        Ok(Self { pool })
    }

    /// A connection from the pool, or UNAVAILABLE after the acquire timeout.
    pub async fn conn(&self) -> Result<PooledConnection, PoolError> {
        self.pool.get().await
    }

    /// Pool occupancy, for metrics and status.
    pub fn pool_status(&self) -> deadpool::Status {
        self.pool.status()
    }

    /// Refuses new checkouts and drops idle connections.
    pub fn close(&self) {
        self.pool.close();
    }
}

/// Applies pending migrations; returns the versions applied.
pub async fn run_migrations(url: &str) -> anyhow::Result<Vec<String>> {
    with_migration_connection(url, |conn| {
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("applying migrations: {e}"))?;
        Ok(applied.iter().map(ToString::to_string).collect())
    })
    .await
}

/// Reverts the newest applied migration; returns its version.
pub async fn revert_last_migration(url: &str) -> anyhow::Result<String> {
    with_migration_connection(url, |conn| {
        conn.revert_last_migration(MIGRATIONS)
            .map(|version| version.to_string())
            .map_err(|e| anyhow::anyhow!("reverting the last migration: {e}"))
    })
    .await
}

/// diesel_migrations is synchronous: it runs on a blocking thread over the
/// async connection wrapped as a sync one.
async fn with_migration_connection<T: Send + 'static>(
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

#[derive(QueryableByName)]
struct SchemaVersion {
    #[diesel(sql_type = Text)]
    version: String,
}

/// Newest applied migration version, if any.
pub async fn schema_version(conn: &mut DbConnection) -> diesel::QueryResult<Option<String>> {
    let rows: Vec<SchemaVersion> = diesel::sql_query(
        "SELECT version FROM __diesel_schema_migrations ORDER BY version DESC LIMIT 1",
    )
    .load(conn)
    .await?;
    Ok(rows.into_iter().next().map(|row| row.version))
}

#[derive(QueryableByName)]
struct ServerVersion {
    #[diesel(sql_type = Text)]
    server_version: String,
}

/// One round trip that proves the database answers; returns its version.
pub async fn ping(conn: &mut DbConnection) -> diesel::QueryResult<String> {
    let row: ServerVersion = diesel::sql_query("SELECT current_setting('server_version') AS server_version")
        .get_result(conn)
        .await?;
    Ok(row.server_version)
}
