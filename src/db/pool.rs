//! The shared [`Database`] handle: one deadpool pool of either backend,
//! built by one builder, with every connection configured on creation
//! (statement bound, SQLite pragmas) and its statements counted.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use anyhow::Context;
use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::{ConnectionError, ConnectionResult};
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection};

use super::connection::{DbConnection, SqliteAsyncConnection};
use super::target::DatabaseTarget;
use super::tls::PgConnector;

/// Why a connection could not be had from the pool.
pub type PoolError = diesel_async::pooled_connection::deadpool::PoolError;

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
    /// Waits for a connection, and the ones that failed (metrics).
    acquire_seconds: Option<Histogram>,
    acquire_failures: Counter,
}

impl Database {
    /// Builds the pool lazily: no connection is opened until one is needed,
    /// so the server can start while the database is still coming up.
    pub fn new(target: &DatabaseTarget, settings: &PoolSettings) -> anyhow::Result<Self> {
        let statements = Arc::new(AtomicU64::new(0));
        let pool = match target {
            DatabaseTarget::Postgres(url) => {
                let setup = format!(
                    "SET statement_timeout = {}",
                    settings.statement_timeout.as_millis()
                );
                // TLS as the URL's sslmode and sslrootcert say (`super::tls`).
                let connector = PgConnector::new(url, "DATABASE_URL")?;
                let connect = move |_url: &str| {
                    let connector = connector.clone();
                    Box::pin(async move { Ok(connector.establish().await?) }) as Connecting<_>
                };
                DbPool::Postgres(build_pool(
                    url,
                    connect,
                    settings,
                    setup,
                    statements.clone(),
                )?)
            }
            DatabaseTarget::Sqlite(path) => {
                let connect = |url: &str| {
                    let url = url.to_owned();
                    Box::pin(async move { SqliteAsyncConnection::establish(&url).await })
                        as Connecting<_>
                };
                DbPool::Sqlite(build_pool(
                    &DatabaseTarget::sqlite_path(path)?,
                    connect,
                    settings,
                    sqlite_pragmas(settings.statement_timeout),
                    statements.clone(),
                )?)
            }
        };
        Ok(Self {
            pool,
            backend_name: target.backend_name(),
            statements,
            acquire_seconds: None,
            acquire_failures: Counter::default(),
        })
    }

    /// Observes every wait for a connection in `seconds` and counts the
    /// failed ones in `failures`.
    pub fn observing_acquires(mut self, seconds: Histogram, failures: Counter) -> Self {
        self.acquire_seconds = Some(seconds);
        self.acquire_failures = failures;
        self
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
        let started = std::time::Instant::now();
        // A trace shows the wait for a free connection apart from the
        // queries (see `crate::db::query_span`).
        let span = super::db_span!("db.acquire");
        let acquired = match &self.pool {
            DbPool::Postgres(pool) => pool
                .get()
                .instrument(span)
                .await
                .map(DbConnection::Postgres),
            DbPool::Sqlite(pool) => sqlite_checkout(pool)
                .instrument(span)
                .await
                .map(DbConnection::Sqlite),
        };
        if let Some(seconds) = &self.acquire_seconds {
            seconds.observe(started.elapsed().as_secs_f64());
        }
        if acquired.is_err() {
            self.acquire_failures.inc();
        }
        acquired
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

/// Counts statements on a connection (see [`Database::statements_executed`]).
fn count_statements(counter: Arc<AtomicU64>) -> impl Instrumentation {
    move |event: InstrumentationEvent<'_>| {
        if matches!(event, InstrumentationEvent::StartQuery { .. }) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Settings every SQLite connection gets: WAL so readers never block the
/// writer, a bounded wait for the write lock instead of an immediate
/// SQLITE_BUSY, and foreign keys (off by default in SQLite) for the cascades.
pub(super) fn sqlite_pragmas(busy_timeout: Duration) -> String {
    // busy_timeout first: the first connection to open a WAL database
    // (and one switching it to WAL) holds a lock while it sets the WAL up,
    // and a second connection opened at that moment (a request's beside a
    // background task's) must wait for it there, not fail at once.
    format!(
        "PRAGMA busy_timeout = {}; \
         PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; \
         PRAGMA foreign_keys = ON;",
        busy_timeout.as_millis()
    )
}

/// Opening one connection of a backend.
type Connecting<C> = futures_util::future::BoxFuture<'static, ConnectionResult<C>>;

/// The one pool builder for both backends: every new connection is opened
/// by `connect` within the connect timeout, runs `setup` (PostgreSQL's
/// statement_timeout, SQLite's pragmas), and counts its statements from
/// then on.
fn build_pool<C>(
    url: &str,
    connect: impl Fn(&str) -> Connecting<C> + Send + Sync + 'static,
    settings: &PoolSettings,
    setup: String,
    statements: Arc<AtomicU64>,
) -> anyhow::Result<Pool<C>>
where
    C: AsyncConnection + 'static,
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C>,
{
    let connect_timeout = settings.connect_timeout;
    let mut config = ManagerConfig::default();
    // A broken connection is detected by its error; a test query on
    // every checkout would double the round trips of every RPC.
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let setup = setup.clone();
        let statements = statements.clone();
        let connecting = connect(url);
        Box::pin(async move {
            let mut conn = tokio::time::timeout(connect_timeout, connecting)
                .await
                .map_err(|_| ConnectionError::BadConnection("connect timed out".into()))??;
            conn.batch_execute(&setup)
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            conn.set_instrumentation(count_statements(statements));
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::<C>::new_with_config(url, config);
    Pool::builder(manager)
        .max_size(settings.max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(settings.acquire_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .build()
        .context("building the database pool")
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
