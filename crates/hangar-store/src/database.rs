//! Which database the store opens (`--database`): `sqlite:PATH` or `postgres://…`, and
//! the lock that keeps a second server off a SQLite file another one has open.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::{Result, StoreError};

/// A database the store can open.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file (the embedded default, under the data dir).
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`postgres://user:pw@host:port/db`).
    Postgres(String),
}

impl FromStr for Database {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Database> {
        if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::BadUrl(
                    "sqlite: needs a file path, e.g. sqlite:/var/lib/hangar/hangar.db".into(),
                ));
            }
            return Ok(Database::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Database::Postgres(s.to_string()));
        }
        Err(StoreError::BadUrl(format!(
            "{:?} names no database this hangar can open; use sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE",
            redact(s)
        )))
    }
}

impl fmt::Display for Database {
    /// The database as a user may see it in logs: a PostgreSQL password is left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Database::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The URL with any password between `user:` and `@` replaced.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Takes the lock file beside a SQLite database; fails at once when another process
/// holds it. The lock goes when the returned file is dropped or the process dies.
pub fn lock_sqlite(path: &Path) -> Result<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Task(format!("open {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse {
            path: path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Task(format!(
            "lock {}: {e}",
            lock_path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_hide_passwords() {
        assert_eq!(
            "sqlite:/tmp/h.db".parse::<Database>().ok(),
            Some(Database::Sqlite("/tmp/h.db".into()))
        );
        let pg: Database = "postgres://hangar:s3cret@db:5432/hangar".parse().unwrap();
        assert_eq!(pg.to_string(), "postgres://hangar:***@db:5432/hangar");
        let err = "mysql://root:pw@x/db".parse::<Database>().unwrap_err();
        assert!(err.to_string().contains("sqlite:PATH"), "{err}");
        assert!(!err.to_string().contains("pw@"), "{err}");
        assert!("sqlite:".parse::<Database>().is_err());
    }

    #[test]
    fn a_second_store_on_one_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let first = crate::Store::open(&path).unwrap();
        let err = crate::Store::open(&path).err().unwrap();
        assert!(
            err.to_string().contains("in use by another hangar server"),
            "{err}"
        );
        drop(first);
        // A child another test forks holds a copy of the lock's file until it execs.
        let mut again = crate::Store::open(&path);
        for _ in 0..50 {
            if again.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            again = crate::Store::open(&path);
        }
        again.unwrap();
    }
}
