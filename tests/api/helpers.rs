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

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Once};
use std::time::Duration;

use chatbot_backend::auth::{HashCost, PasswordHasher};
use chatbot_backend::config::Settings;
use chatbot_backend::db::models::User;
use chatbot_backend::db::Database;
use chatbot_backend::domain::Password;
use chatbot_backend::hot_path::api_key_cache::ApiKeyCache;
use chatbot_backend::hot_path::read_coalescing::ReadStats;
use chatbot_backend::proto::api_key_service_client::ApiKeyServiceClient;
use chatbot_backend::proto::audit_service_client::AuditServiceClient;
use chatbot_backend::proto::auth_service_client::AuthServiceClient;
use chatbot_backend::proto::chatbot_service_client::ChatbotServiceClient;
use chatbot_backend::proto::status_service_client::StatusServiceClient;
use chatbot_backend::proto::user_service_client::UserServiceClient;
use chatbot_backend::proto::{self};
use chatbot_backend::startup::Application;
use clap::Parser;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OnceCell;
use tokio::task::AbortHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

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

pub const SECRET_KEY: &str = "test-secret-key-that-is-at-least-32-bytes-long";
pub const PASSWORD: &str = "correct horse battery staple";

/// argon2's cheapest parameters: a hash takes microseconds instead of tens
/// of milliseconds (more on a busy machine, where the hashing threads' low
/// priority starves them), which dominated the suite's run time.
pub const TEST_HASH_COST: HashCost = HashCost {
    memory_kib: 8,
    iterations: 1,
};

/// Everything the server logged during this test binary's run, so tests
/// can assert that no secret ever reaches a log line.
pub static LOGS: LazyLock<Arc<Mutex<Vec<u8>>>> = LazyLock::new(Arc::default);

#[derive(Clone)]
struct LogSink;

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stdout().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::new(
            "debug,h2=info,hyper=info,tower=info,hyper_util=info",
        );
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(|| LogSink)
            .init();
    });
}

pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

#[derive(Parser)]
struct TestCli {
    #[command(flatten)]
    settings: Settings,
}

fn test_server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn with_database(server_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(server_url).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

async fn admin_connection() -> AsyncPgConnection {
    AsyncPgConnection::establish(&test_server_url())
        .await
        .expect("PostgreSQL at TEST_DATABASE_URL must be reachable")
}

/// The first 16 hex digits of a SHA-256 over `migrations/<backend>/`'s
/// files (paths and contents), so a changed migration set gets a template
/// of its own and never reuses a stale one.
fn migrations_digest(backend: &str) -> String {
    fn collect(dir: &std::path::Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read the migrations directory") {
            let path = entry.expect("a migrations directory entry").path();
            if path.is_dir() {
                collect(&path, files);
            } else {
                files.push(path);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    let mut digest = Sha256::new();
    for file in files {
        let relative = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        digest.update(relative.as_bytes());
        digest.update([0]);
        digest.update(std::fs::read(&file).expect("read a migration"));
        digest.update([0]);
    }
    digest.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Applies the migrations to `database_url` the way an operator does, with
/// the binary's `migrate` subcommand, which also creates the database.
async fn migrate_with_the_binary(database_url: &str) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatbot-backend"))
        .arg("migrate")
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the migrate subcommand");
    assert!(
        output.status.success(),
        "migrating the template failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The name of the PostgreSQL database that test databases are cloned
/// from, migrated once per migration set. It is migrated under a unique
/// name and renamed when complete, so a run never clones a half-migrated
/// template and concurrent test runs never collide (the loser of a race
/// drops its copy). Connections to it are refused: `CREATE DATABASE ..
/// TEMPLATE` fails while anyone is connected to the template.
async fn postgres_template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("cbtemplate_{}", migrations_digest("postgres"));
            let mut admin = admin_connection().await;
            if database_exists(&mut admin, &name).await {
                return name;
            }
            let staging = format!("{name}_{}", uuid::Uuid::new_v4().simple());
            migrate_with_the_binary(&with_database(&test_server_url(), &staging)).await;
            diesel::sql_query(format!(
                "ALTER DATABASE \"{staging}\" WITH ALLOW_CONNECTIONS false"
            ))
            .execute(&mut admin)
            .await
            .expect("close the template to connections");
            let renamed =
                diesel::sql_query(format!("ALTER DATABASE \"{staging}\" RENAME TO \"{name}\""))
                    .execute(&mut admin)
                    .await;
            if renamed.is_err() {
                // Another run finished its template first; use that one.
                diesel::sql_query(format!(
                    "DROP DATABASE IF EXISTS \"{staging}\" WITH (FORCE)"
                ))
                .execute(&mut admin)
                .await
                .expect("drop the redundant template");
                assert!(
                    database_exists(&mut admin, &name).await,
                    "could not rename the template: {renamed:?}"
                );
            }
            name
        })
        .await
}

/// Leases a database of the pool that belongs to this migration set's
/// template: the first slot whose advisory lock this connection gets, made
/// from the template on first use and emptied on every later one. The
/// lock, and so the lease, lasts as long as the returned connection.
async fn lease_postgres_database() -> (String, AsyncPgConnection) {
    #[derive(diesel::QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    let template = postgres_template().await;
    let mut lease = admin_connection().await;
    for slot in 0.. {
        let name = format!("{}_{slot}", template.replacen("cbtemplate_", "cbpool_", 1));
        let locked = diesel::sql_query("SELECT pg_try_advisory_lock(hashtext($1)) AS locked")
            .bind::<diesel::sql_types::Text, _>(&name)
            .get_result::<Locked>(&mut lease)
            .await
            .expect("try a pool slot's lock")
            .locked;
        if !locked {
            continue;
        }
        if database_exists(&mut lease, &name).await {
            empty_pooled_database(&mut lease, &name).await;
        } else {
            diesel::sql_query(format!(
                "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
            ))
            .execute(&mut lease)
            .await
            .expect("create a pooled database from the template");
        }
        return (name, lease);
    }
    unreachable!("slots are unbounded")
}

/// Ends every connection a pooled database's previous holder left (a
/// server still shutting down must not write into the next test) and
/// deletes every row but the migration history. Sequences keep counting,
/// so a late write by id can never hit a row of the next test.
async fn empty_pooled_database(lease: &mut AsyncPgConnection, name: &str) {
    #[derive(diesel::QueryableByName)]
    struct Table {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind::<diesel::sql_types::Text, _>(name)
    .execute(lease)
    .await
    .expect("end the previous holder's connections");
    let mut conn = AsyncPgConnection::establish(&with_database(&test_server_url(), name))
        .await
        .expect("connect to a pooled database");
    let tables: Vec<Table> = diesel::sql_query(
        "SELECT format('%I', table_name) AS name FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' \
         AND table_name <> '__diesel_schema_migrations'",
    )
    .load(&mut conn)
    .await
    .expect("list a pooled database's tables");
    let tables: Vec<String> = tables.into_iter().map(|table| table.name).collect();
    diesel::sql_query(format!("TRUNCATE {} CASCADE", tables.join(", ")))
        .execute(&mut conn)
        .await
        .expect("empty a pooled database");
}

async fn database_exists(admin: &mut AsyncPgConnection, name: &str) -> bool {
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS found")
        .bind::<diesel::sql_types::Text, _>(name)
        .get_result::<Found>(admin)
        .await
        .expect("look up a database")
        .found
}

/// The SQLite file that test databases are copied from, migrated once per
/// migration set; made under a unique name and renamed into place, which
/// is atomic, so a concurrent run never copies a half-migrated file.
async fn sqlite_template() -> &'static std::path::Path {
    static TEMPLATE: OnceCell<PathBuf> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let directory = std::env::temp_dir();
            let digest = migrations_digest("sqlite");
            let path = directory.join(format!("cbtemplate_{digest}.db"));
            if path.is_file() {
                return path;
            }
            let staging = directory.join(format!(
                "cbtemplate_{digest}_{}.db",
                uuid::Uuid::new_v4().simple()
            ));
            migrate_with_the_binary(&format!("sqlite://{}", staging.display())).await;
            // The last connection's close checkpoints the write-ahead log
            // into the file; a copy of the file alone must be complete.
            let mut wal = staging.clone().into_os_string();
            wal.push("-wal");
            assert!(
                std::fs::metadata(&wal).map_or(true, |wal| wal.len() == 0),
                "the migrated template left a write-ahead log behind"
            );
            std::fs::rename(&staging, &path).expect("move the SQLite template into place");
            path
        })
        .await
}

/// Interceptor that adds `authorization: Bearer <token>` when a token is set.
#[derive(Clone)]
pub struct Bearer(pub Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            let value = format!("Bearer {token}").parse().expect("token is ASCII");
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;

/// A signed-up, logged-in user.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub password: String,
    pub token: String,
    pub refresh_token: String,
}

pub struct TestApp {
    /// Where the gRPC server listens.
    pub addr: std::net::SocketAddr,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub database_url: String,
    database: TestDatabase,
    pub db: Database,
    pub api_key_cache: Arc<ApiKeyCache>,
    pub chatbot_reads: Arc<ReadStats>,
    clients: Clients,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Starts a server with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// A fresh database of the current [`Backend`]: a SQLite file deleted on
/// drop, or a PostgreSQL database leased from a pool (see
/// [`TestDatabase::create`]) and given back on drop.
pub struct TestDatabase {
    pub backend: Backend,
    pub name: String,
    pub url: String,
    sqlite_path: Option<PathBuf>,
    /// Only the owner drops the database or gives back its lease.
    owner: bool,
    /// Holds a pooled PostgreSQL database's lease (an advisory lock) while
    /// it lives; closing it gives the database back instead of dropping it.
    lease: Option<AsyncPgConnection>,
}

impl TestDatabase {
    /// A database already migrated to the latest schema and holding no
    /// rows. On SQLite, a copy of this migration set's template file. On
    /// PostgreSQL, a database leased from a pool shared by every test
    /// process (an advisory lock on the server is the lease) and emptied:
    /// creating a database from a template takes about a second on a busy
    /// machine and dropping one forces a checkpoint of the whole server,
    /// while emptying a leased one takes milliseconds.
    pub async fn create() -> Self {
        let mut database = Self::named();
        match &database.sqlite_path {
            Some(path) => {
                std::fs::copy(sqlite_template().await, path).expect("copy the SQLite template");
            }
            None => {
                let (name, lease) = lease_postgres_database().await;
                database.url = with_database(&test_server_url(), &name);
                database.name = name;
                database.lease = Some(lease);
            }
        }
        database
    }

    /// An empty database (on SQLite, not even the file), which the server
    /// migrates on start: for tests of that path.
    pub async fn create_empty() -> Self {
        let database = Self::named();
        if database.sqlite_path.is_none() {
            let mut admin = admin_connection().await;
            diesel::sql_query(format!("CREATE DATABASE \"{}\"", database.name))
                .execute(&mut admin)
                .await
                .expect("create test database");
        }
        database
    }

    /// A new name and its URL for the current backend; nothing created yet.
    fn named() -> Self {
        init_logging();
        let backend = Backend::current();
        let name = format!("cbtest_{}", uuid::Uuid::new_v4().simple());
        let (url, sqlite_path) = match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                (format!("sqlite://{}", path.display()), Some(path))
            }
            Backend::Postgres => (with_database(&test_server_url(), &name), None),
        };
        Self {
            backend,
            name,
            url,
            sqlite_path,
            owner: true,
            lease: None,
        }
    }

    /// The same database, for a second server; dropping it drops nothing.
    pub fn shared(&self) -> Self {
        Self {
            backend: self.backend,
            name: self.name.clone(),
            url: self.url.clone(),
            sqlite_path: self.sqlite_path.clone(),
            owner: false,
            lease: None,
        }
    }

    /// The PostgreSQL server's address, for a [`TcpProxy`] in front of it.
    pub fn postgres_addr(&self) -> SocketAddr {
        let url = url::Url::parse(&self.url).unwrap();
        format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
            .parse()
            .unwrap()
    }

    /// The same database reached through another host:port (a proxy).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        let mut url = url::Url::parse(&self.url).unwrap();
        url.set_host(Some(&addr.ip().to_string())).unwrap();
        url.set_port(Some(addr.port())).unwrap();
        url.to_string()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if !self.owner || self.lease.is_some() {
            // A leased database is given back when `lease` closes.
            return;
        }
        if let Some(path) = &self.sqlite_path {
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
            return;
        }
        let server_url = test_server_url();
        let name = self.name.clone();
        // Drop cannot await; a short-lived runtime on its own thread can.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(mut conn) = AsyncPgConnection::establish(&server_url).await {
                    let _ = diesel::sql_query(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    ))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
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

/// Starts a server on `database`, reached through `database_url`.
pub async fn spawn_app_on(
    database: TestDatabase,
    database_url: &str,
    extra_flags: &[&str],
) -> TestApp {
    start_server(database, database_url, extra_flags, HashCosts::Cheapest).await
}

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
    let db = app.database().clone();
    let api_key_cache = app.api_key_cache();
    let chatbot_reads = app.chatbot_read_stats();
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = shutdown_rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid URI")
        .connect()
        .await
        .expect("connect to the test server");
    TestApp {
        addr,
        metrics_addr,
        database_url: database.url.clone(),
        database,
        db,
        api_key_cache,
        chatbot_reads,
        clients: Clients { channel },
        shutdown: Some(shutdown_tx),
        server: Some(server),
    }
}

/// Typed clients of one server, for a token or none. [`TestApp`] and
/// [`ReplicaProcess`] both dereference to it.
pub struct Clients {
    channel: Channel,
}

impl Clients {
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    fn authed(&self, token: Option<&str>) -> Authed {
        InterceptedService::new(self.channel.clone(), Bearer(token.map(str::to_owned)))
    }

    pub fn users(&self, token: Option<&str>) -> UserServiceClient<Authed> {
        UserServiceClient::new(self.authed(token))
    }

    pub fn chatbots(&self, token: Option<&str>) -> ChatbotServiceClient<Authed> {
        ChatbotServiceClient::new(self.authed(token))
    }

    pub fn api_keys(&self, token: Option<&str>) -> ApiKeyServiceClient<Authed> {
        ApiKeyServiceClient::new(self.authed(token))
    }

    pub fn auth(&self, token: Option<&str>) -> AuthServiceClient<Authed> {
        AuthServiceClient::new(self.authed(token))
    }

    pub fn status(&self, token: Option<&str>) -> StatusServiceClient<Authed> {
        StatusServiceClient::new(self.authed(token))
    }

    pub fn audit(&self, token: Option<&str>) -> AuditServiceClient<Authed> {
        AuditServiceClient::new(self.authed(token))
    }

    /// The chatbot as GetChatbot answers it to `token`'s user; panics on
    /// an error status.
    pub async fn read_chatbot(&self, token: &str, id: &str) -> proto::Chatbot {
        self.chatbots(Some(token))
            .get_chatbot(proto::GetChatbotRequest { id: id.into() })
            .await
            .expect("GetChatbot answers OK")
            .into_inner()
            .chatbot
            .expect("chatbot in response")
    }

    /// GetDatabaseStatus as `token`'s user sees it; panics on an error
    /// status.
    pub async fn database_status(&self, token: &str) -> proto::GetDatabaseStatusResponse {
        self.status(Some(token))
            .get_database_status(proto::GetDatabaseStatusRequest {})
            .await
            .expect("GetDatabaseStatus answers OK")
            .into_inner()
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<proto::LoginResponse, Status> {
        Ok(self
            .auth(None)
            .login(proto::LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await?
            .into_inner())
    }
}

impl std::ops::Deref for TestApp {
    type Target = Clients;

    fn deref(&self) -> &Clients {
        &self.clients
    }
}

impl TestApp {
    pub async fn sign_up(&self, email: &str, password: &str) -> Result<proto::User, Status> {
        let response = self
            .users(None)
            .create_user(proto::CreateUserRequest {
                email: email.into(),
                password: password.into(),
                role: 0,
            })
            .await?;
        Ok(response.into_inner().user.expect("user in response"))
    }

    /// A new user with a unique email, signed up and logged in.
    pub async fn new_user(&self) -> TestUser {
        let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
        let user = self
            .sign_up(&email, PASSWORD)
            .await
            .expect("sign-up succeeds");
        let login = self.login(&email, PASSWORD).await.expect("login succeeds");
        TestUser {
            id: user.id,
            email,
            password: PASSWORD.into(),
            token: login.access_token,
            refresh_token: login.refresh_token,
        }
    }

    /// A new admin, created the way `create-admin` does, and logged in.
    pub async fn new_admin(&self) -> TestUser {
        let email = format!("admin-{}@example.com", uuid::Uuid::new_v4().simple());
        let hash = PasswordHasher::with_cost(1, TEST_HASH_COST)
            .unwrap()
            .hash(Password::parse("password", PASSWORD.into()).unwrap())
            .await
            .unwrap();
        let mut conn = self.db.conn().await.unwrap();
        let user = User::upsert_admin(&mut conn, &email, &hash).await.unwrap();
        // Login needs a connection too, and a test's pool may have one.
        drop(conn);
        let login = self
            .login(&email, PASSWORD)
            .await
            .expect("admin login succeeds");
        TestUser {
            id: user.id.to_string(),
            email,
            password: PASSWORD.into(),
            token: login.access_token,
            refresh_token: login.refresh_token,
        }
    }

    pub async fn create_chatbot(&self, owner: &TestUser, name: &str) -> proto::Chatbot {
        self.chatbots(Some(&owner.token))
            .create_chatbot(proto::CreateChatbotRequest {
                owner_id: String::new(),
                name: name.into(),
                llm_endpoint_url: "https://llm.example.com/v1/chat".into(),
            })
            .await
            .expect("create chatbot")
            .into_inner()
            .chatbot
            .expect("chatbot in response")
    }

    pub async fn create_api_key(
        &self,
        owner: &TestUser,
        chatbot_id: &str,
    ) -> proto::CreateApiKeyResponse {
        self.api_keys(Some(&owner.token))
            .create_api_key(proto::CreateApiKeyRequest {
                chatbot_id: chatbot_id.into(),
                display_name: "test key".into(),
                expire_time: None,
                ..Default::default()
            })
            .await
            .expect("create API key")
            .into_inner()
    }

    pub async fn verify(&self, key: &str) -> proto::VerifyApiKeyResponse {
        self.api_keys(None)
            .verify_api_key(proto::VerifyApiKeyRequest {
                key: key.into(),
                ..Default::default()
            })
            .await
            .expect("VerifyApiKey answers OK")
            .into_inner()
    }

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

/// VerifyApiKey of `key` at `cost`, through `clients`; panics on an error
/// status.
pub async fn verify_costing(
    clients: &Clients,
    key: &str,
    cost: i64,
) -> proto::VerifyApiKeyResponse {
    clients
        .api_keys(None)
        .verify_api_key(proto::VerifyApiKeyRequest {
            key: key.into(),
            cost,
        })
        .await
        .expect("VerifyApiKey answers OK")
        .into_inner()
}

/// Asserts a call failed with `code`, returning the status for more checks.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got OK: {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}

/// The field paths of a status's BadRequest violations.
pub fn violated_fields(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Reads the JSON log of a server binary started with `LOG_FORMAT=json` and
/// `LISTEN_ADDR` port 0, showing each event to `done`, until `done` says so
/// and the server has said where it serves; stdout is drained in the
/// background afterwards.
async fn read_log_until(
    child: &mut tokio::process::Child,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> SocketAddr {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = None;
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("server starts in time")
            .unwrap()
            .expect("server is running");
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if event["message"] == "serving gRPC" {
            addr = event["local_addr"].as_str().map(|a| a.parse().unwrap());
        }
        if done(&event) && addr.is_some() {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    addr.unwrap()
}

/// [`read_log_until`] it serves, showing each event to `inspect`.
pub async fn serving_addr(
    child: &mut tokio::process::Child,
    mut inspect: impl FnMut(&serde_json::Value),
) -> SocketAddr {
    read_log_until(child, |event| {
        inspect(event);
        event["message"] == "serving gRPC"
    })
    .await
}

/// A second server as its own process (the real binary) on a test app's
/// database: a replica shares nothing with the first but the database.
pub struct ReplicaProcess {
    clients: Clients,
    _child: tokio::process::Child,
}

impl TestApp {
    /// Starts the server binary on this app's database with `env` on top of
    /// the test defaults, and returns once it serves and, on PostgreSQL,
    /// listens for other replicas' changes (so its caches are live).
    pub async fn spawn_replica_process(&self, env: &[(&str, &str)]) -> ReplicaProcess {
        let mut command = server_command();
        command
            .arg("serve")
            .env("DATABASE_URL", &self.database_url)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("SECRET_KEY", SECRET_KEY)
            .env("MIGRATE_ON_START", "false")
            .env("SHUTDOWN_DRAIN_DELAY_SECS", "0")
            .env("RATE_LIMIT_PER_USER", "0")
            .env("RATE_LIMIT_PER_ADDRESS", "0")
            .env("RATE_LIMIT_PER_API_KEY", "0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start the server binary");
        // Ready once it serves and, on PostgreSQL, listens for the other
        // replicas' changes (only then are its caches live).
        let must_listen = self.database.backend == Backend::Postgres;
        let mut listening = false;
        let addr = read_log_until(&mut child, |event| {
            listening |= event["message"] == "listening for API key invalidations";
            listening || !must_listen
        })
        .await;
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("valid URI")
            .connect()
            .await
            .expect("connect to the replica");
        ReplicaProcess {
            clients: Clients { channel },
            _child: child,
        }
    }
}

impl std::ops::Deref for ReplicaProcess {
    type Target = Clients;

    fn deref(&self) -> &Clients {
        &self.clients
    }
}

/// The server binary, hashing at [`TEST_HASH_COST`] like the in-process
/// servers.
pub fn server_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatbot-backend"));
    command
        .env(
            "PASSWORD_HASH_MEMORY_KIB",
            TEST_HASH_COST.memory_kib.to_string(),
        )
        .env(
            "PASSWORD_HASH_ITERATIONS",
            TEST_HASH_COST.iterations.to_string(),
        );
    command
}

/// A TCP proxy the test can cut (dropping every connection and refusing new
/// ones) and restore.
pub struct TcpProxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (cut_flag, registry) = (cut.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if AtomicBool::load(&cut_flag, Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                registry.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            addr,
            cut,
            connections,
        }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}
