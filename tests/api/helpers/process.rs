//! The real server binary as a child process: started with JSON logs, and
//! watched through them until it serves.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::clients::Clients;
use super::{Backend, TestApp, SECRET_KEY, TEST_HASH_COST};

/// Starts `command` (the server binary, set up by the caller) logging JSON
/// events at info level to a piped stdout, for [`serving_addr`] to read;
/// the process is killed when the returned child is dropped.
pub fn spawn_logging_json(command: &mut Command) -> Child {
    command
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server binary")
}

type LogLines = Lines<BufReader<ChildStdout>>;

/// Reads the JSON log of a server binary started with `LOG_FORMAT=json` and
/// `LISTEN_ADDR` port 0, showing each event to `done`, until `done` says so
/// and the server has said where it serves; returns the rest of the log,
/// which the caller must drain (or the server blocks on a full pipe).
async fn read_log_until(
    child: &mut Child,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> (SocketAddr, LogLines) {
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
    (addr.unwrap(), lines)
}

/// [`read_log_until`] it serves, showing each event to `inspect`.
pub async fn serving_addr(
    child: &mut Child,
    mut inspect: impl FnMut(&serde_json::Value),
) -> SocketAddr {
    let (addr, mut lines) = read_log_until(child, |event| {
        inspect(event);
        event["message"] == "serving gRPC"
    })
    .await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    addr
}

/// A second server as its own process (the real binary) on a test app's
/// database: a replica shares nothing with the first but the database.
pub struct ReplicaProcess {
    clients: Clients,
    /// Its log since it started serving, one JSON event per line.
    log: Arc<Mutex<String>>,
    _child: Child,
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
            // As in process: lifecycle events only where a test asks.
            .env("LIFECYCLE_EVENTS_INTERVAL_SECS", "3600");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = spawn_logging_json(&mut command);
        // Ready once it serves and, on PostgreSQL, listens for the other
        // replicas' changes (only then are its caches live).
        let must_listen = self.database.backend == Backend::Postgres;
        let mut listening = false;
        let (addr, mut lines) = read_log_until(&mut child, |event| {
            listening |= event["message"] == "listening for API key invalidations";
            listening || !must_listen
        })
        .await;
        let log = Arc::new(Mutex::new(String::new()));
        let kept = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut kept = kept.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        ReplicaProcess {
            clients: Clients::connect(addr).await,
            log,
            _child: child,
        }
    }
}

impl ReplicaProcess {
    /// The JSON events it has logged since it started serving.
    pub fn log_events(&self) -> Vec<serde_json::Value> {
        let log = self.log.lock().unwrap();
        log.lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

impl std::ops::Deref for ReplicaProcess {
    type Target = Clients;

    fn deref(&self) -> &Clients {
        &self.clients
    }
}

/// Runs the binary's operator command `args` (`migrate --revert`,
/// `backup --output ...`, `create-admin` reading `stdin`) on
/// `database_url`: whether it succeeded, and what it said on stdout and
/// stderr.
pub async fn run_command(
    database_url: &str,
    args: &[&std::ffi::OsStr],
    stdin: &str,
) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = server_command()
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("SECRET_KEY", SECRET_KEY)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the server binary");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = child.wait_with_output().await.expect("the binary runs");
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), said)
}

/// The binary's `migrate` with `args` on `database_url`: whether it
/// succeeded, and what it said.
pub async fn migrate(database_url: &str, args: &[&str]) -> (bool, String) {
    let args: Vec<&std::ffi::OsStr> = std::iter::once("migrate")
        .chain(args.iter().copied())
        .map(std::ffi::OsStr::new)
        .collect();
    run_command(database_url, &args, "").await
}

/// The server binary, hashing at [`TEST_HASH_COST`] like the in-process
/// servers.
pub fn server_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatbot-backend"));
    command
        // The default port would be shared by every server a test starts.
        .env("CONSOLE_LISTEN_ADDR", "127.0.0.1:0")
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

/// `count` CreateApiKey calls at once, alternately through `app` and
/// `replica`, on the `(owner, chatbot)` pairs in turn (two calls each);
/// the new keys' ids, in call order.
pub async fn create_keys_through_both(
    app: &Clients,
    replica: &Clients,
    on: &[(&super::TestUser, &str)],
    count: usize,
) -> Vec<i64> {
    let calls = (0..count).map(|i| {
        let through = if i % 2 == 0 { app } else { replica };
        let (owner, chatbot) = on[(i / 2) % on.len()];
        async move {
            through
                .api_keys(Some(&owner.token))
                .create_api_key(chatbot_backend::proto::CreateApiKeyRequest {
                    chatbot_id: chatbot.to_owned(),
                    display_name: format!("key {i}"),
                    ..Default::default()
                })
                .await
                .expect("create key")
                .into_inner()
                .api_key
                .expect("the key")
                .id
        }
    });
    futures_util::future::join_all(calls).await
}
