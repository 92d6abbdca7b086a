//! Which store `DATABASE_URL` selects: PostgreSQL or an embedded SQLite
//! file, parsed once at start, with a form safe to log.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Which store a `DATABASE_URL` selects. `Debug` hides the PostgreSQL
/// password, so a logged or printed configuration leaks no credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// A `postgres://` or `postgresql://` URL, passed to PostgreSQL as is.
    Postgres(String),
    /// A file path, from `sqlite://PATH`, `sqlite:PATH` or a bare path.
    Sqlite(PathBuf),
}

impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(_) => f
                .debug_tuple("DatabaseTarget::Postgres")
                .field(&self.redacted())
                .finish(),
            Self::Sqlite(path) => f.debug_tuple("DatabaseTarget::Sqlite").field(path).finish(),
        }
    }
}

impl DatabaseTarget {
    /// Parses `DATABASE_URL`.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        anyhow::ensure!(
            !path.contains("://"),
            "DATABASE_URL must be a postgres:// URL, a sqlite:// URL or a file path"
        );
        anyhow::ensure!(!path.is_empty(), "DATABASE_URL names no SQLite file");
        // Every pooled connection would get its own empty in-memory database.
        anyhow::ensure!(
            !path.starts_with(":memory:") && !path.contains("mode=memory"),
            "in-memory SQLite databases cannot be shared by a connection pool; name a file"
        );
        Ok(Self::Sqlite(PathBuf::from(path)))
    }

    /// The backend's name, as logged and reported by GetDatabaseStatus.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgresql",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Where the data lives, without credentials, for the log.
    pub fn redacted(&self) -> String {
        match self {
            Self::Postgres(url) => match url::Url::parse(url) {
                Ok(mut parsed) => {
                    let _ = parsed.set_password(None);
                    parsed.to_string()
                }
                Err(_) => "postgres://(unparsable URL)".into(),
            },
            Self::Sqlite(path) => path.display().to_string(),
        }
    }

    /// diesel opens SQLite files by a `&str` path.
    pub(super) fn sqlite_path(path: &Path) -> anyhow::Result<String> {
        path.to_str()
            .map(str::to_owned)
            .context("the SQLite path is not valid UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::DatabaseTarget;
    use std::path::PathBuf;

    #[test]
    fn postgres_urls_select_postgres() {
        for url in ["postgres://u@h/db", "postgresql://u:p@h:5432/db"] {
            assert_eq!(
                DatabaseTarget::parse(url).unwrap(),
                DatabaseTarget::Postgres(url.into())
            );
        }
    }

    #[test]
    fn sqlite_urls_and_bare_paths_select_sqlite() {
        for (url, path) in [
            ("sqlite://chatbot-backend.db", "chatbot-backend.db"),
            ("sqlite:data/app.db", "data/app.db"),
            ("sqlite:///var/lib/app.db", "/var/lib/app.db"),
            ("/tmp/app.sqlite3", "/tmp/app.sqlite3"),
        ] {
            assert_eq!(
                DatabaseTarget::parse(url).unwrap(),
                DatabaseTarget::Sqlite(PathBuf::from(path))
            );
        }
    }

    #[test]
    fn memory_databases_empty_paths_and_other_schemes_are_refused() {
        for url in [
            "sqlite::memory:",
            ":memory:",
            "sqlite://",
            "",
            "mysql://u@h/db",
        ] {
            assert!(DatabaseTarget::parse(url).is_err(), "{url:?} was accepted");
        }
    }

    #[test]
    fn the_logged_postgres_location_hides_the_password() {
        let target = DatabaseTarget::parse("postgres://app:hunter2@db:5432/chatbot").unwrap();
        assert!(!target.redacted().contains("hunter2"));
        assert!(target.redacted().contains("db:5432/chatbot"));
    }

    #[test]
    fn the_debug_form_hides_the_password() {
        let target = DatabaseTarget::parse("postgres://app:hunter2@db:5432/chatbot").unwrap();
        let printed = format!("{target:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("db:5432/chatbot"), "{printed}");
    }
}

/// A SQLite file held for serving, released when dropped. One process
/// serves a SQLite file: each process trusts its own caches, which no other
/// process's changes would invalidate (SQLite has no NOTIFY), so a second
/// server on the same file could keep accepting a revoked key.
#[derive(Debug)]
pub struct ServeLock {
    _file: std::fs::File,
}

impl DatabaseTarget {
    /// For SQLite, takes `<file>.lock` (an advisory lock the kernel drops
    /// with the process, however it ends), or fails at once naming why;
    /// PostgreSQL needs none (replicas hear each other's changes).
    pub fn lock_for_serving(&self) -> anyhow::Result<Option<ServeLock>> {
        let Self::Sqlite(path) = self else {
            return Ok(None);
        };
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|error| {
                anyhow::anyhow!("cannot open {}: {error}", lock_path.to_string_lossy())
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(ServeLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
                "another process is serving {} (it holds {}): one process serves a SQLite \
                 file, since each caches what only it can invalidate; stop the other, or use \
                 PostgreSQL for several replicas",
                path.display(),
                lock_path.to_string_lossy()
            )),
            Err(std::fs::TryLockError::Error(error)) => Err(anyhow::anyhow!(
                "cannot lock {}: {error}",
                lock_path.to_string_lossy()
            )),
        }
    }
}
