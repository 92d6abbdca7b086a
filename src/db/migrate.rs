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

/// Reverts the newest applied migration; returns its version.
pub async fn revert_last_migration(target: &DatabaseTarget) -> anyhow::Result<String> {
    fn revert<DB: diesel::backend::Backend>(
        conn: &mut impl MigrationHarness<DB>,
        migrations: EmbeddedMigrations,
    ) -> anyhow::Result<String> {
        conn.revert_last_migration(migrations)
            .map(|version| version.to_string())
            .map_err(|e| anyhow::anyhow!("reverting the last migration: {e}"))
    }
    match target {
        DatabaseTarget::Postgres(url) => {
            with_postgres_migration_connection(url, |conn| revert(conn, POSTGRES_MIGRATIONS)).await
        }
        DatabaseTarget::Sqlite(path) => {
            with_sqlite_migration_connection(path, |conn| revert(conn, SQLITE_MIGRATIONS)).await
        }
    }
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
