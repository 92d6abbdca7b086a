//! A server started in this process for one test, on a fresh database.

use std::sync::Arc;

use chatbot_backend::auth::HashCost;
use chatbot_backend::config::Settings;
use chatbot_backend::db::Database;
use chatbot_backend::hot_path::api_key_cache::ApiKeyCache;
use chatbot_backend::hot_path::read_coalescing::ReadStats;
use chatbot_backend::hot_path::KnownKeys;
use chatbot_backend::startup::Application;
use clap::Parser;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::clients::Clients;
use super::database::TestDatabase;
use super::{Backend, SECRET_KEY, TEST_HASH_COST};

#[derive(Parser)]
struct TestCli {
    #[command(flatten)]
    settings: Settings,
}

/// A running server and what a test may look at inside it; it derefs to
/// its [`Clients`]. Dropping it stops the server and gives back the
/// database.
pub struct TestApp {
    /// Where the gRPC server listens.
    pub addr: std::net::SocketAddr,
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where the operator console listens (on a free port by default).
    pub console_addr: Option<std::net::SocketAddr>,
    pub database_url: String,
    pub(super) database: TestDatabase,
    pub db: Database,
    pub api_key_cache: Arc<ApiKeyCache>,
    pub known_keys: Arc<KnownKeys>,
    pub chatbot_reads: Arc<ReadStats>,
    clients: Clients,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Starts a server with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts a server that hashes passwords at the production cost (the
/// defaults of `PASSWORD_HASH_MEMORY_KIB` and `PASSWORD_HASH_ITERATIONS`),
/// for the tests about that cost or that need hashes to take a while, with
/// extra command-line flags.
pub async fn spawn_app_with_production_hash_cost(extra_flags: &[&str]) -> TestApp {
    let database = TestDatabase::create().await;
    let url = database.url.clone();
    start_server(database, &url, extra_flags, HashCosts::Production).await
}

/// What a test server hashes passwords at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HashCosts {
    Cheapest,
    /// OWASP's, the server's default.
    Production,
}

/// Starts a server with extra command-line flags, e.g. `["--allow-signup", "false"]`.
pub async fn spawn_app_with(extra_flags: &[&str]) -> TestApp {
    let database = TestDatabase::create().await;
    let url = database.url.clone();
    spawn_app_on(database, &url, extra_flags).await
}

/// Starts a server on a fresh PostgreSQL database reached through a
/// [`TcpProxy`](super::TcpProxy) the test can cut, garble or delay, with
/// short acquire and connect timeouts so a cut shows within a second.
pub async fn spawn_app_behind_postgres_proxy() -> (TestApp, super::TcpProxy) {
    spawn_app_behind_postgres_proxy_with(&[]).await
}

/// [`spawn_app_behind_postgres_proxy`] with extra command-line flags.
pub async fn spawn_app_behind_postgres_proxy_with(
    extra_flags: &[&str],
) -> (TestApp, super::TcpProxy) {
    let database = TestDatabase::create().await;
    let proxy = super::TcpProxy::start(database.postgres_addr()).await;
    let via_proxy = database.url_via(proxy.addr);
    let mut flags = vec![
        "--database-acquire-timeout-ms",
        "1000",
        "--database-connect-timeout-ms",
        "1000",
    ];
    flags.extend_from_slice(extra_flags);
    (spawn_app_on(database, &via_proxy, &flags).await, proxy)
}

/// Starts a server on `database`, reached through `database_url`.
pub async fn spawn_app_on(
    database: TestDatabase,
    database_url: &str,
    extra_flags: &[&str],
) -> TestApp {
    start_server(database, database_url, extra_flags, HashCosts::Cheapest).await
}

/// Starts the server on `database` (reached through `database_url`) with
/// the test defaults, which `extra_flags` may override, and connects to it.
async fn start_server(
    database: TestDatabase,
    database_url: &str,
    extra_flags: &[&str],
    hash_costs: HashCosts,
) -> TestApp {
    let database_url = database_url.to_owned();

    let mut args = vec![
        "test".to_owned(),
        "--database-url".into(),
        database_url.clone(),
        "--listen-addr".into(),
        "127.0.0.1:0".into(),
        "--shutdown-drain-delay-secs".into(),
        "0".into(),
    ];
    // Defaults a test can override by passing the flag itself; rate limits
    // are off unless a test is about them.
    let mut defaults = vec![
        ("--secret-key", SECRET_KEY.to_owned()),
        ("--database-pool-size", "4".to_owned()),
        ("--rate-limit-per-user", "0".to_owned()),
        ("--rate-limit-per-address", "0".to_owned()),
        ("--rate-limit-per-api-key", "0".to_owned()),
        // Lifecycle events (a key expiring, credits low) only where a test
        // is about them: elsewhere they would join the events it counts.
        ("--lifecycle-events-interval-secs", "3600".to_owned()),
        // Every test server has a console, on a port of its own.
        ("--console-listen-addr", "127.0.0.1:0".to_owned()),
    ];
    // Passed even for the production cost, so that a PASSWORD_HASH_* in the
    // developer's environment cannot change what the test measures.
    let cost = match hash_costs {
        HashCosts::Cheapest => TEST_HASH_COST,
        HashCosts::Production => HashCost::OWASP,
    };
    defaults.extend([
        ("--password-hash-memory-kib", cost.memory_kib.to_string()),
        ("--password-hash-iterations", cost.iterations.to_string()),
    ]);
    for (flag, value) in defaults {
        if !extra_flags.contains(&flag) {
            args.extend([flag.to_owned(), value.to_owned()]);
        }
    }
    args.extend(extra_flags.iter().map(|s| (*s).to_owned()));
    let settings = TestCli::parse_from(args).settings;
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let console_addr = app.console_addr();
    let db = app.database().clone();
    let api_key_cache = app.api_key_cache();
    let known_keys = app.known_keys();
    let chatbot_reads = app.chatbot_read_stats();
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = shutdown_rx.await;
    }));
    TestApp {
        addr,
        metrics_addr,
        console_addr,
        database_url: database.url.clone(),
        database,
        db,
        api_key_cache,
        known_keys,
        chatbot_reads,
        clients: Clients::connect(addr).await,
        shutdown: Some(shutdown_tx),
        server: Some(server),
    }
}

impl std::ops::Deref for TestApp {
    type Target = Clients;

    fn deref(&self) -> &Clients {
        &self.clients
    }
}

impl TestApp {
    /// Runs SQL against this test's PostgreSQL database directly.
    pub async fn sql(&self) -> AsyncPgConnection {
        assert_eq!(self.database.backend, Backend::Postgres);
        AsyncPgConnection::establish(&self.database_url)
            .await
            .unwrap()
    }

    /// Everything the database holds, as text: every row of every table on
    /// PostgreSQL; the raw bytes of the database file and its write-ahead
    /// log on SQLite.
    pub async fn stored_data(&self) -> String {
        if let Some(path) = &self.database.sqlite_path {
            let mut bytes = std::fs::read(path).expect("read the SQLite file");
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            bytes.extend(std::fs::read(wal).unwrap_or_default());
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            row: String,
        }
        #[derive(diesel::QueryableByName)]
        struct Table {
            #[diesel(sql_type = diesel::sql_types::Text)]
            name: String,
        }
        let mut conn = self.sql().await;
        // Every table, so a write to a table added later shows up too.
        let tables: Vec<Table> = diesel::sql_query(
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
        )
        .load(&mut conn)
        .await
        .unwrap();
        let mut dump = String::new();
        for Table { name: table } in tables {
            dump.push_str(&format!("-- {table}\n"));
            let rows: Vec<Row> = diesel::sql_query(format!(
                "SELECT row_to_json(t)::text AS row FROM \"{table}\" t"
            ))
            .load(&mut conn)
            .await
            .unwrap();
            for row in rows {
                dump.push_str(&row.row);
                dump.push('\n');
            }
        }
        dump
    }

    /// A second server (replica) on this app's database, with `extra_flags`.
    pub async fn spawn_replica(&self, extra_flags: &[&str]) -> TestApp {
        spawn_app_on(self.database.shared(), &self.database_url, extra_flags).await
    }

    /// Waits (up to 10 s) until VerifyApiKey answers from the cache, which
    /// on PostgreSQL starts once the invalidation listener is connected.
    pub async fn wait_for_api_key_cache(&self) {
        for _ in 0..200 {
            if self.api_key_cache.is_active() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the API key cache did not become active");
    }

    /// Where this app's PostgreSQL listens (to put a proxy in front).
    pub fn database_postgres_addr(&self) -> std::net::SocketAddr {
        self.database.postgres_addr()
    }

    /// This app's database URL, connecting through `addr` instead.
    pub fn database_url_via(&self, addr: std::net::SocketAddr) -> String {
        self.database.url_via(addr)
    }

    /// Waits (up to 10 s) until unknown keys are answered from the set of
    /// known keys (PostgreSQL only: the listener is live and the set
    /// loaded).
    pub async fn wait_for_known_keys(&self) {
        for _ in 0..200 {
            if self.known_keys.is_trusted() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the known keys were never loaded");
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server exits cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        // The database is given back (or dropped) after this.
        let _ = &self.database;
    }
}
