//! Schema migrations, embedded per backend (`migrations/postgres`,
//! `migrations/sqlite`): apply, revert, create the database on a fresh
//! machine, and report the version applied.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use diesel::sql_types::Text;
use diesel::sqlite::SqliteConnection;
use diesel::QueryableByName;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::connection::{db_run, DbConnection};
use super::pool::sqlite_pragmas;
use super::target::DatabaseTarget;
use super::tls::PgConnector;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Applies pending migrations, creating the database first if it does not
/// exist (a PostgreSQL database of that name, or the SQLite file), so a
/// fresh machine needs no setup; returns the versions applied.
pub async fn run_migrations(target: &DatabaseTarget) -> anyhow::Result<Vec<String>> {
    fn apply<DB: diesel::backend::Backend>(
        conn: &mut impl MigrationHarness<DB>,
        migrations: EmbeddedMigrations,
    ) -> anyhow::Result<Vec<String>> {
        let applied = conn
            .run_pending_migrations(migrations)
            .map_err(|e| anyhow::anyhow!("applying migrations: {e}"))?;
        Ok(applied.iter().map(ToString::to_string).collect())
    }
    match target {
        DatabaseTarget::Postgres(url) => {
            create_database_if_missing(url).await?;
            with_postgres_migration_connection(url, |conn| apply(conn, POSTGRES_MIGRATIONS)).await
        }
        DatabaseTarget::Sqlite(path) => {
            with_sqlite_migration_connection(path, |conn| apply(conn, SQLITE_MIGRATIONS)).await
        }
    }
}

/// Migrations whose `down.sql` drops no data (only indexes, say): the
/// ones `migrate --revert` undoes without `--destroy-data`. Every other
/// revert drops tables or columns with what they hold. A unit test keeps
/// this list true to the files.
const REVERTS_KEEPING_DATA: &[&str] = &["20261204000007", "20261206000010", "20261214000020"];

/// Reverts the newest applied migration; returns its version. A migration
/// whose revert drops data is refused unless `destroy_data` says so.
pub async fn revert_last_migration(
    target: &DatabaseTarget,
    destroy_data: bool,
) -> anyhow::Result<String> {
    fn revert<DB: diesel::backend::Backend>(
        conn: &mut impl MigrationHarness<DB>,
        migrations: EmbeddedMigrations,
        destroy_data: bool,
    ) -> anyhow::Result<String> {
        let applied = conn
            .applied_migrations()
            .map_err(|e| anyhow::anyhow!("reading the applied migrations: {e}"))?;
        let Some(newest) = applied.iter().map(ToString::to_string).max() else {
            anyhow::bail!("no migration is applied; nothing to revert");
        };
        if !destroy_data && !REVERTS_KEEPING_DATA.contains(&newest.as_str()) {
            anyhow::bail!(
                "reverting migration {newest} drops tables or columns and the data in them; \
                 back the database up, then run `migrate --revert --destroy-data`"
            );
        }
        conn.revert_last_migration(migrations)
            .map(|version| version.to_string())
            .map_err(|e| anyhow::anyhow!("reverting the last migration: {e}"))
    }
    match target {
        DatabaseTarget::Postgres(url) => {
            with_postgres_migration_connection(url, move |conn| {
                revert(conn, POSTGRES_MIGRATIONS, destroy_data)
            })
            .await
        }
        DatabaseTarget::Sqlite(path) => {
            with_sqlite_migration_connection(path, move |conn| {
                revert(conn, SQLITE_MIGRATIONS, destroy_data)
            })
            .await
        }
    }
}

/// Copies a SQLite store to `output` while servers may be using it: one
/// consistent snapshot (SQLite's `VACUUM INTO`, a read transaction that
/// writers in WAL mode do not wait for). `output` must not exist yet.
/// PostgreSQL is backed up with its own tools (docs/operations.md, Backups).
pub async fn back_up(target: &DatabaseTarget, output: &Path) -> anyhow::Result<()> {
    let DatabaseTarget::Sqlite(path) = target else {
        anyhow::bail!(
            "backup copies a SQLite store; back PostgreSQL up with pg_dump (docs/operations.md, Backups)"
        );
    };
    if output.exists() {
        anyhow::bail!("{} exists already; back up to a new file", output.display());
    }
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the directory of {}", output.display()))?;
    }
    let output = output
        .to_str()
        .context("the backup's path is not UTF-8")?
        .to_owned();
    with_sqlite_migration_connection(path, move |conn| {
        diesel::RunQueryDsl::execute(
            diesel::sql_query("VACUUM INTO ?").bind::<Text, _>(&output),
            conn,
        )
        .with_context(|| format!("copying the database to {output}"))?;
        Ok(())
    })
    .await
}

async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    // TLS as for every other connection (`super::tls`).
    let connector = PgConnector::new(url, "DATABASE_URL")?;
    let error = match connector.establish().await {
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    if !error.to_string().contains("does not exist") {
        return Err(anyhow::Error::from(error).context("connecting to the database"));
    }
    let parsed = url::Url::parse(url).context("DATABASE_URL is not a URL")?;
    let name = parsed.path().trim_start_matches('/').to_owned();
    anyhow::ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "database {name:?} does not exist and its name is not one to create automatically"
    );
    let mut admin = connector
        .with_database("postgres")
        .establish()
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
async fn with_postgres_migration_connection<T: Send + 'static>(
    url: &str,
    work: impl FnOnce(&mut AsyncConnectionWrapper<AsyncPgConnection>) -> anyhow::Result<T>
        + Send
        + 'static,
) -> anyhow::Result<T> {
    let conn = PgConnector::new(url, "DATABASE_URL")?
        .establish()
        .await
        .context("connecting to the database to migrate it")?;
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        work(&mut conn)
    })
    .await
    .context("migration task panicked")?
}

/// SQLite migrates over a plain synchronous connection on a blocking thread;
/// opening the file creates it (and its directory is created here).
async fn with_sqlite_migration_connection<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce(&mut SqliteConnection) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    use diesel::connection::{Connection, SimpleConnection};

    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the directory of {}", path.display()))?;
    }
    let path = DatabaseTarget::sqlite_path(path)?;
    tokio::task::spawn_blocking(move || {
        let mut conn = SqliteConnection::establish(&path)
            .with_context(|| format!("opening the SQLite database {path}"))?;
        conn.batch_execute(&sqlite_pragmas(Duration::from_secs(5)))
            .context("configuring the SQLite database")?;
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
    let rows: Vec<SchemaVersion> = db_run!(conn => {
        diesel::sql_query(
            "SELECT version FROM __diesel_schema_migrations ORDER BY version DESC LIMIT 1",
        )
        .load(conn)
        .await
    })?;
    Ok(rows.into_iter().next().map(|row| row.version))
}

#[cfg(test)]
mod migration_file_tests {
    use super::REVERTS_KEEPING_DATA;

    /// Every migration's `file` (`up.sql` or `down.sql`), as
    /// (backend/directory name, text).
    fn scripts(file: &str) -> Vec<(String, String)> {
        let mut scripts = Vec::new();
        for backend in ["postgres", "sqlite"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(backend);
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(path.join(file)).unwrap();
                scripts.push((format!("{backend}/{name}"), text));
            }
        }
        scripts
    }

    /// SQLite cannot drop a constraint: the one way is to rebuild the table
    /// under a new name with the same columns, copy it, drop the old one
    /// and rename the new. The previous version sees the same columns. Each
    /// rebuild is listed here, with the table it rebuilds.
    const SQLITE_REBUILDS: &[(&str, &str)] = &[(
        "sqlite/2026-12-07-000011_credit_reservations",
        "API_KEY_LIMITS",
    )];

    /// The rolling-upgrade rule (docs/operations.md, Upgrades): a migration only adds (tables,
    /// nullable or defaulted columns, indexes, rows), so a replica of the
    /// previous version keeps working on the new schema. Removing or
    /// renaming waits for a later release, once no replica reads it.
    #[test]
    fn migrations_only_add_so_the_previous_version_keeps_working() {
        for (name, up) in scripts("up.sql") {
            let rebuilt = SQLITE_REBUILDS
                .iter()
                .find(|(migration, _)| name.ends_with(migration))
                .map(|(_, table)| *table);
            let statements = up
                .lines()
                .filter(|line| !line.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                .to_uppercase();
            for statement in statements.split(';') {
                let statement = statement.split_whitespace().collect::<Vec<_>>().join(" ");
                if rebuilt.is_some_and(|table| {
                    statement == format!("DROP TABLE {table}")
                        || statement == format!("ALTER TABLE {table}_NEW RENAME TO {table}")
                }) {
                    continue;
                }
                for removing in [
                    "DROP TABLE",
                    "DROP COLUMN",
                    "RENAME",
                    "ALTER COLUMN",
                    "TRUNCATE",
                ] {
                    assert!(
                        !statement.contains(removing),
                        "{name}: `{statement}` removes or changes what the previous version uses"
                    );
                }
                if statement.contains("ADD COLUMN") && statement.contains("NOT NULL") {
                    assert!(
                        statement.contains("DEFAULT"),
                        "{name}: `{statement}`: a NOT NULL column needs a default, or the \
                         previous version's inserts fail"
                    );
                }
            }
        }
    }

    /// A `down.sql` keeps data when all it does is drop indexes, triggers
    /// and functions (or nothing).
    fn keeps_data(down_sql: &str) -> bool {
        down_sql
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with("--"))
            .all(|line| {
                let line = line.to_uppercase();
                ["DROP INDEX", "DROP TRIGGER", "DROP FUNCTION", "SELECT 1;"]
                    .iter()
                    .any(|keeping| line.starts_with(keeping))
            })
    }

    #[test]
    fn the_reverts_that_keep_data_are_exactly_those_that_only_drop_indexes() {
        for (name, down) in scripts("down.sql") {
            let directory = name.rsplit('/').next().unwrap();
            let version: String = directory
                .split('_')
                .next()
                .unwrap()
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            assert_eq!(
                REVERTS_KEEPING_DATA.contains(&version.as_str()),
                keeps_data(&down),
                "{name}"
            );
        }
    }
}
