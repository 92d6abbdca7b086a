//! One connection type for both backends: [`DbConnection`], the
//! [`db_run!`] macro that runs a query on whichever backend it holds, and
//! the transaction wrapper every multi-statement change goes through.

use std::fmt;

use diesel::sql_types::Text;
use diesel::sqlite::SqliteConnection;
use diesel::QueryableByName;
use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::scoped_futures::ScopedBoxFuture;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, TransactionManager};
use tracing::Instrument;

/// SQLite behind diesel-async: each statement runs on a blocking thread.
pub type SqliteAsyncConnection = SyncConnectionWrapper<SqliteConnection>;

/// Runs `$body` with `$conn` rebound from `&mut DbConnection` to the concrete
/// connection of its backend. The body is compiled once per backend, so a
/// query that one backend cannot run fails to compile rather than at run time.
/// The body runs as an async block in a [`query_span!`], so a `?` inside it
/// leaves only the block: put it after the macro.
macro_rules! db_run {
    ($conn:ident => $body:expr) => {
        match $conn {
            $crate::db::DbConnection::Postgres(pooled) => {
                let $conn: &mut ::diesel_async::AsyncPgConnection = &mut *pooled;
                ::tracing::Instrument::instrument(
                    async { $body },
                    $crate::db::query_span!("postgresql"),
                )
                .await
            }
            $crate::db::DbConnection::Sqlite(pooled) => {
                let $conn: &mut $crate::db::SqliteAsyncConnection = &mut *pooled;
                ::tracing::Instrument::instrument(
                    async { $body },
                    $crate::db::query_span!("sqlite"),
                )
                .await
            }
        }
    };
}

/// A DEBUG span for database work, made only inside an RPC's span
/// ([`in_a_trace`]), so it costs nothing unless traces are exported
/// (`crate::telemetry`).
macro_rules! db_span {
    ($($span:tt)*) => {
        // The static level check first: with traces off it settles this
        // without looking up the current span.
        if ::tracing::enabled!(kind: ::tracing::metadata::Kind::SPAN, ::tracing::Level::DEBUG)
            && $crate::db::in_a_trace()
        {
            ::tracing::debug_span!($($span)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// The span of one [`db_run!`], named by the model module it runs in.
macro_rules! query_span {
    ($system:literal) => {
        $crate::db::db_span!(
            "db.query",
            otel.name = concat!("db ", module_path!()),
            otel.kind = "client",
            db.system.name = $system,
            code.namespace = module_path!(),
        )
    };
}

/// Whether database work runs inside a span (an RPC's) that its own spans
/// can be children of. Background work (health checks, batched writes)
/// runs in none, and a span of its own would be a trace of its own every
/// few seconds.
pub fn in_a_trace() -> bool {
    !tracing::Span::current().is_none()
}
pub(crate) use {db_run, db_span, query_span};

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
        let span = db_span!("db.transaction");
        self.begin().instrument(span.clone()).await?;
        match callback(&mut *self).instrument(span.clone()).await {
            Ok(value) => {
                self.commit().instrument(span).await?;
                Ok(value)
            }
            Err(error) => match self.rollback().instrument(span).await {
                Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(error),
                Err(rollback_error) => Err(rollback_error.into()),
            },
        }
    }

    async fn begin(&mut self) -> diesel::QueryResult<()> {
        match self {
            // Every transaction here writes. SQLite's default BEGIN takes the
            // one write lock only at the first write, and if another
            // connection wrote after this transaction's first read, that
            // write fails at once (SQLITE_BUSY, no busy_timeout wait).
            // BEGIN IMMEDIATE takes the lock first, waiting its turn, so no
            // change has to be ordered write-first to be safe. Nested
            // transactions are savepoints as before.
            DbConnection::Sqlite(c) => {
                c.spawn_blocking(|inner| {
                    use diesel::connection::{AnsiTransactionManager, TransactionManager};
                    match AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE") {
                        Err(diesel::result::Error::AlreadyInTransaction) => {
                            AnsiTransactionManager::begin_transaction(inner)
                        }
                        begun => begun,
                    }
                })
                .await
            }
            DbConnection::Postgres(_) => with_transaction_manager!(self, begin_transaction),
        }
    }

    async fn commit(&mut self) -> diesel::QueryResult<()> {
        with_transaction_manager!(self, commit_transaction)
    }

    async fn rollback(&mut self) -> diesel::QueryResult<()> {
        with_transaction_manager!(self, rollback_transaction)
    }
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
    let row: ServerVersion = db_run!(conn => diesel::sql_query(query).get_result(conn).await)?;
    Ok(row.server_version)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use diesel_async::scoped_futures::ScopedFutureExt;
    use diesel_async::SimpleAsyncConnection;

    use super::DbConnection;
    use crate::db::{Database, DatabaseTarget, PoolSettings};

    async fn run(conn: &mut DbConnection, sql: &str) -> diesel::QueryResult<()> {
        db_run!(conn => conn.batch_execute(sql).await)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_sqlite_a_transaction_that_reads_before_it_writes_commits_while_another_connection_writes(
    ) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!("begin-{}-{nanos}.db", std::process::id()));
        let settings = PoolSettings {
            max_size: 2,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        };
        let db = Database::new(&DatabaseTarget::Sqlite(path.clone()), &settings).unwrap();
        let mut conn = db.conn().await.unwrap();
        let schema = "CREATE TABLE counters (n INTEGER NOT NULL); INSERT INTO counters VALUES (0)";
        run(&mut conn, schema).await.unwrap();

        let (read, other_may_write) = tokio::sync::oneshot::channel();
        let other = tokio::spawn({
            let db = db.clone();
            async move {
                other_may_write.await.unwrap();
                let mut conn = db.conn().await.unwrap();
                run(&mut conn, "UPDATE counters SET n = n + 1").await
            }
        });
        let reads_first = conn
            .transaction(|conn| {
                async move {
                    run(conn, "SELECT n FROM counters").await?;
                    read.send(()).unwrap();
                    // Time for the other connection's write to commit, were
                    // it not made to wait for this transaction.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    run(conn, "UPDATE counters SET n = n + 10").await
                }
                .scope_boxed()
            })
            .await;
        let other = other.await.unwrap();

        let mut reader = db.conn().await.unwrap();
        let check = &mut reader;
        let ends: diesel::QueryResult<Vec<Counter>> = db_run!(check => {
            diesel_async::RunQueryDsl::load(diesel::sql_query("SELECT n FROM counters"), check).await
        });
        drop((conn, reader));
        db.close();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        reads_first.expect("the transaction that read first commits");
        other.expect("the other connection's write waits its turn and commits");
        assert_eq!(ends.unwrap().iter().map(|c| c.n).collect::<Vec<_>>(), [11]);
    }

    #[derive(diesel::QueryableByName)]
    struct Counter {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
}
