//! Persistence: the connection pool, embedded migrations and one model module
//! per table holding every query. Services never build SQL.

pub mod models;
pub mod schema;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use diesel::connection::InstrumentationEvent;
use diesel::sql_types::Text;
use diesel::{ConnectionError, QueryableByName};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
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
    statements: Arc<AtomicU64>,
}

impl Database {
    /// Builds the pool lazily: no connection is opened until one is needed,
    /// so the server can start while the database is still coming up.
    pub fn new(url: &str, settings: &PoolSettings) -> anyhow::Result<Self> {
        let statement_timeout_ms = settings.statement_timeout.as_millis();
        let connect_timeout = settings.connect_timeout;
        let statements = Arc::new(AtomicU64::new(0));
        let counter = statements.clone();
        let mut config = ManagerConfig::default();
        // A broken connection is detected by its error; a test query on
        // every checkout would double the round trips of every RPC.
        config.recycling_method = RecyclingMethod::Fast;
        config.custom_setup = Box::new(move |url| {
            let url = url.to_owned();
            let counter = counter.clone();
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
                conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
                    if matches!(event, InstrumentationEvent::StartQuery { .. }) {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                });
                Ok(conn)
            })
        });
        let manager =
            AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
        let pool = Pool::builder(manager)
            .max_size(settings.max_size)
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(settings.acquire_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .context("building the database pool")?;
        Ok(Self { pool, statements })
    }

    /// Statements sent through this pool since it was built: lets tests
    /// prove that a path does not touch the database.
    pub fn statements_executed(&self) -> u64 {
        AtomicU64::load(&self.statements, Ordering::Relaxed)
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

/// Applies pending migrations (creating the database first if the server has
/// none of that name, so a fresh machine needs no setup); returns the
/// versions applied.
pub async fn run_migrations(url: &str) -> anyhow::Result<Vec<String>> {
    create_database_if_missing(url).await?;
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
    let row: ServerVersion =
        diesel::sql_query("SELECT current_setting('server_version') AS server_version")
            .get_result(conn)
            .await?;
    Ok(row.server_version)
}
