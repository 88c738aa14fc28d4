//! Durable state of the platform: orgs, tokens, apps, machines with their versions and
//! events, leases and idempotency keys, app addresses and certificates, sealed secrets
//! and releases, metered usage, in SQLite (WAL mode) with versioned migrations.
//!
//! The store knows rows, not rules: it does not decide which transitions are legal or
//! what an API answers; the server's services and the machine supervisor do. Every call
//! runs on tokio's blocking pool through [`Store::call`], so async code never blocks on
//! the database.

mod apps;
mod edge;
mod error;
mod keys;
mod machines;
mod migrations;
mod releases;
mod secrets;
mod usage;

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

pub use apps::{AppRecord, OrgRecord, TokenRecord};
pub use edge::{CertRecord, IpRecord};
pub use error::StoreError;
pub use keys::{IdempotentResponse, LeaseRecord};
pub use machines::{
    EventRecord, MachineFilter, MachineListing, MachineRecord, KEPT_EVENTS, RECENT_EVENTS,
};
pub use releases::ReleaseRecord;
pub use secrets::{SecretChange, SecretRecord};
pub use usage::{OpenUsage, UsageKey, UsageRecord, UsageWrite};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle to the database, cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

/// The database as seen inside one [`Store::call`]: the domain queries live on it.
pub struct Db<'a> {
    conn: &'a mut Connection,
}

impl Store {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::apply(&mut conn)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` against the database on the blocking pool.
    pub async fn call<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut Db<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Poisoned)?;
            let mut db = Db { conn: &mut guard };
            f(&mut db)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs `f` on the calling thread; for start-up and tests, never inside async code.
    pub fn call_blocking<R>(&self, f: impl FnOnce(&mut Db<'_>) -> Result<R>) -> Result<R> {
        let mut guard = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let mut db = Db { conn: &mut guard };
        f(&mut db)
    }
}
