//! The migrated templates fresh test databases come from, made once per
//! migration set: a SQLite file to copy, and on PostgreSQL a template
//! database and the pool of databases made from it that tests lease.

use std::path::PathBuf;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::database::{admin_connection, test_server_url, with_database};

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
pub(super) async fn lease_postgres_database() -> (String, AsyncPgConnection) {
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

/// Whether the PostgreSQL server has a database called `name`.
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
pub(super) async fn sqlite_template() -> &'static std::path::Path {
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
