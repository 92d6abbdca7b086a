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
        with_transaction_manager!(self, begin_transaction)
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
