//! A fresh database for each test, on the backend the test runs on.

use std::net::SocketAddr;
use std::path::PathBuf;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::logs::init_logging;
use super::templates::{lease_postgres_database, sqlite_template};
use super::Backend;

/// The PostgreSQL server tests make their databases on: `TEST_DATABASE_URL`,
/// or the local one.
pub(super) fn test_server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `server_url` with its database changed to `name`.
pub(super) fn with_database(server_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(server_url).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A connection to the PostgreSQL server's default database, for creating
/// and dropping databases.
pub(super) async fn admin_connection() -> AsyncPgConnection {
    AsyncPgConnection::establish(&test_server_url())
        .await
        .expect("PostgreSQL at TEST_DATABASE_URL must be reachable")
}

/// A fresh database of the current [`Backend`]: a SQLite file deleted on
/// drop, or a PostgreSQL database leased from a pool (see
/// [`TestDatabase::create`]) and given back on drop.
pub struct TestDatabase {
    pub backend: Backend,
    pub name: String,
    pub url: String,
    pub sqlite_path: Option<PathBuf>,
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
    pub fn url_via(&self, addr: SocketAddr) -> String {
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
            for suffix in ["", "-wal", "-shm", ".lock"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
            return;
        }
        let server_url = test_server_url();
        let name = self.name.clone();
        finish_in_drop(async move {
            if let Ok(mut conn) = AsyncPgConnection::establish(&server_url).await {
                let _ =
                    diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
            }
        });
    }
}

/// Runs `cleanup` to completion from a `Drop`, which cannot await: on a
/// short-lived runtime on a thread of its own, since the test's runtime may
/// be shutting down.
pub fn finish_in_drop(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        runtime.expect("a runtime for a cleanup").block_on(cleanup);
    })
    .join();
}
