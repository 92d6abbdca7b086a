//! The load generator (this package's binary) against a real server, on
//! each store: every request it reports is one the server answered, with
//! the status it answered.
//!
//! The server runs in process (`Application`), so the test can count the
//! reads it served. This package cannot use the server's black-box harness
//! (tests/api/helpers.rs needs the server package's own binary), so the
//! little it needs is here: a fresh database, dropped at the end.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chatbot_backend::config::Settings;
use chatbot_backend::hot_path::read_coalescing::ReadStats;
use chatbot_backend::startup::Application;
use clap::Parser;

const SECRET_KEY: &str = "test-secret-key-that-is-at-least-32-bytes-long";

#[derive(Parser)]
struct TestCli {
    #[command(flatten)]
    settings: Settings,
}

/// A fresh database of one store; the server creates and migrates it on
/// start, and dropping this removes it.
enum TestDatabase {
    /// A database on the PostgreSQL server at `TEST_DATABASE_URL`, as in
    /// the server's own tests.
    Postgres {
        server_url: String,
        name: String,
    },
    Sqlite {
        path: PathBuf,
    },
}

impl TestDatabase {
    fn postgres() -> Self {
        let server_url = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        Self::Postgres {
            server_url,
            name: format!("cbtest_loadgen_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    fn sqlite() -> Self {
        let name = format!("cbtest_loadgen_{}.db", uuid::Uuid::new_v4().simple());
        Self::Sqlite {
            path: std::env::temp_dir().join(name),
        }
    }

    fn url(&self) -> String {
        match self {
            Self::Postgres { server_url, name } => {
                let mut url = url::Url::parse(server_url).expect("TEST_DATABASE_URL is a URL");
                url.set_path(&format!("/{name}"));
                url.to_string()
            }
            Self::Sqlite { path } => format!("sqlite://{}", path.display()),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match self {
            Self::Sqlite { path } => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            Self::Postgres { server_url, name } => {
                let (server_url, name) = (server_url.clone(), name.clone());
                // Drop cannot await; a short-lived runtime on its own thread can.
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async move {
                        let Ok((client, connection)) =
                            tokio_postgres::connect(&server_url, tokio_postgres::NoTls).await
                        else {
                            return;
                        };
                        tokio::spawn(connection);
                        let _ = client
                            .batch_execute(&format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            ))
                            .await;
                    });
                })
                .join();
            }
        }
    }
}

/// A server on a random port, stopped on drop.
struct TestServer {
    addr: SocketAddr,
    chatbot_reads: Arc<ReadStats>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    // Declared last: dropped after the server has been told to stop.
    _database: TestDatabase,
}

async fn spawn_server(database: TestDatabase) -> TestServer {
    let args = [
        "test",
        "--database-url",
        &database.url(),
        "--listen-addr",
        "127.0.0.1:0",
        "--shutdown-drain-delay-secs",
        "0",
        "--secret-key",
        SECRET_KEY,
        "--database-pool-size",
        "4",
        // The load generator's calls come from one address as one user.
        "--rate-limit-per-user",
        "0",
        "--rate-limit-per-address",
        "0",
        "--rate-limit-per-api-key",
        "0",
        // No console: the default port would be shared by both stores' servers.
        "--console-listen-addr",
        "off",
        // Every GetChatbot reaches the database, where the test counts it.
        "--chatbot-cache-capacity",
        "0",
    ];
    let settings = TestCli::parse_from(args).settings;
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let addr = app.local_addr();
    let chatbot_reads = app.chatbot_read_stats();
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    TestServer {
        addr,
        chatbot_reads,
        _shutdown: shutdown,
        _database: database,
    }
}

/// Runs the load generator for `requests` requests and returns its JSON
/// summary line.
async fn run_loadgen(server: &TestServer, rpc: &str, requests: u32) -> serde_json::Value {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--addr",
            &format!("http://{}", server.addr),
            "--rpc",
            rpc,
            "--concurrency",
            "4",
            "--connections",
            "2",
            "--requests",
            &requests.to_string(),
            "--warmup-secs",
            "0",
            "--json",
        ])
        .output()
        .await
        .expect("the load generator runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "loadgen failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().expect("a summary line")).expect("JSON summary")
}

async fn reports_each_request_with_the_status_the_server_gave(database: TestDatabase) {
    let server = spawn_server(database).await;
    let reads_before = server.chatbot_reads.reads();
    let summary = run_loadgen(&server, "get-chatbot", 200).await;
    assert_eq!(summary["requests"], 200);
    assert_eq!(summary["ok_requests"], 200);
    assert_eq!(summary["status"]["OK"], 200);
    // Each reported request reached the server.
    assert_eq!(server.chatbot_reads.reads() - reads_before, 200);

    let summary = run_loadgen(&server, "verify-api-key-invalid", 50).await;
    assert_eq!(summary["status"]["OK/NOT_FOUND"], 50);
}

/// Named like the server's `backend_test!` pairs, so `cargo test sqlite`
/// and `cargo test postgres` select these too.
mod the_load_generator_reports_each_request_with_the_status_the_server_gave {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn postgres() {
        reports_each_request_with_the_status_the_server_gave(TestDatabase::postgres()).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite() {
        reports_each_request_with_the_status_the_server_gave(TestDatabase::sqlite()).await;
    }
}
