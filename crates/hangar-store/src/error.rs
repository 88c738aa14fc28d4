//! The store's error type.

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("database schema version {found} is newer than this hangar understands ({known}); upgrade hangar")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("database lock poisoned by an earlier panic")]
    Poisoned,
    #[error("database task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// True when the row the statement wrote would break a uniqueness rule.
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        )
    }
}
