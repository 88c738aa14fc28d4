//! The store's error type.

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database error: {0}")]
    Postgres(tokio_postgres::Error),
    /// The database cannot be reached now (PostgreSQL down or restarting); retrying
    /// later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("invalid --database URL: {0}")]
    BadUrl(String),
    #[error("{path} is in use by another hangar server; stop it, or give this one its own --data-dir or --database")]
    InUse { path: String },
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("database schema version {found} is newer than this hangar understands ({known}); upgrade hangar")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("column {index} of a stored row is not {expected}")]
    Column {
        index: usize,
        expected: &'static str,
    },
    #[error("stored column of type {0} cannot be read")]
    ColumnType(String),
    #[error("query returned no row")]
    NoRow,
    /// A value no row may hold (text with a NUL byte, which PostgreSQL refuses and so
    /// SQLite is not given either); the caller's input, not the database, is at fault.
    #[error("{0}")]
    Invalid(String),
    /// The write lost a race another writer won (a volume taken by another machine
    /// meanwhile); the caller may look again.
    #[error("{0}")]
    Conflict(String),
    /// A stored value this binary cannot read (written by a newer one, or by hand).
    #[error("stored data cannot be read: {0}; is this hangar older than the one that wrote it?")]
    Corrupt(String),
    #[error("database lock poisoned by an earlier panic")]
    Poisoned,
    #[error("database task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// True when the row the statement wrote would break a uniqueness rule.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            StoreError::Postgres(e) => {
                e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            _ => false,
        }
    }

    /// True when the database could not be reached: the caller may answer 503.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}
