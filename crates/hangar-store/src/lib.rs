//! Durable state of the platform: orgs, tokens, apps, machines with their versions and
//! events, leases and idempotency keys, app addresses and certificates, sealed secrets
//! and releases, metered usage, in SQLite (WAL mode, the embedded default) or
//! PostgreSQL (state shared by many hosts), with the same versioned migrations.
//!
//! The store knows rows, not rules: it does not decide which transitions are legal or
//! what an API answers; the server's services and the machine supervisor do. Every call
//! runs on tokio's blocking pool through [`Store::call`], so async code never blocks on
//! the database; [`sql`] hides which engine answers.

mod apps;
mod database;
mod edge;
mod error;
mod feed;
mod keys;
mod machines;
mod migrations;
mod observed;
mod postgres;
mod releases;
mod secrets;
mod snapshots;
mod sql;
mod usage;
mod volumes;
mod wireguard;

#[cfg(test)]
mod engines_test;

use std::path::Path;
use std::sync::{Arc, Mutex};

pub use apps::{AppRecord, OrgRecord, TokenRecord, MOST_ORGS};
pub use database::{lock_sqlite, Database};
pub use edge::{CertRecord, IpRecord};
pub use error::StoreError;
pub use feed::{FeedEntry, FeedKind, FeedRead, Follower, KEPT_REVISIONS};
pub use keys::{IdempotentResponse, LeaseRecord};
pub use machines::{
    EventRecord, MachineFilter, MachineListing, MachineRecord, KEPT_EVENTS, RECENT_EVENTS,
};
pub use postgres::{Lead, Leadership};
pub use releases::ReleaseRecord;
pub use secrets::{SecretChange, SecretRecord};
pub use snapshots::SnapshotRecord;
pub use sql::Dialect;
pub use usage::{OpenUsage, UsageKey, UsageRecord, UsageWrite};
pub use volumes::{AttachRefusal, VolumeRecord};
pub use wireguard::WireguardPeerRecord;

use sql::Conn;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle to the database, cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Conn>>,
    dialect: Dialect,
    /// Held while the store is open: one server per SQLite file.
    _lock: Option<Arc<std::fs::File>>,
    /// Where the feed's listener connects, on PostgreSQL.
    postgres_url: Option<String>,
    feed_wake: Arc<feed::FeedWake>,
}

/// The database as seen inside one [`Store::call`]: the domain queries live on it.
pub struct Db<'a> {
    conn: &'a mut Conn,
    /// Set by a write that appended to the feed, to wake this process's followers.
    fed: bool,
}

impl Store {
    /// Opens (creating if needed) a SQLite database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        Store::connect(&Database::Sqlite(path.to_path_buf()))
    }

    /// Opens the database and brings its schema up to date. A SQLite file is held for
    /// this store alone; a newer schema than this build knows is refused before anything
    /// is written.
    pub fn connect(database: &Database) -> Result<Store> {
        let (mut conn, lock) = match database {
            Database::Sqlite(path) => {
                let lock = database::lock_sqlite(path)?;
                let conn = rusqlite::Connection::open(path)?;
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                conn.pragma_update(None, "foreign_keys", "ON")?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                (Conn::Sqlite(conn), Some(Arc::new(lock)))
            }
            Database::Postgres(url) => (
                Conn::Postgres(Box::new(postgres::PgConn::connect(url)?)),
                None,
            ),
        };
        migrations::apply(&mut conn)?;
        Ok(Store {
            dialect: conn.dialect(),
            conn: Arc::new(Mutex::new(conn)),
            _lock: lock,
            postgres_url: match database {
                Database::Postgres(url) => Some(url.clone()),
                Database::Sqlite(_) => None,
            },
            feed_wake: Arc::default(),
        })
    }

    /// Which engine this store runs on.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Runs `f` against the database on the blocking pool.
    pub async fn call<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut Db<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let conn = self.conn.clone();
        let wake = self.feed_wake.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Poisoned)?;
            let mut db = Db {
                conn: &mut guard,
                fed: false,
            };
            let r = f(&mut db);
            if db.fed {
                wake.notify.notify_waiters();
            }
            r
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs `f` on the calling thread; for start-up and tests, never inside async code.
    pub fn call_blocking<R>(&self, f: impl FnOnce(&mut Db<'_>) -> Result<R>) -> Result<R> {
        let mut guard = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let mut db = Db {
            conn: &mut guard,
            fed: false,
        };
        let r = f(&mut db);
        if db.fed {
            self.feed_wake.notify.notify_waiters();
        }
        r
    }
}

impl Db<'_> {
    /// Which engine answers, for the few expressions the engines spell differently.
    fn dialect(&self) -> Dialect {
        self.conn.dialect()
    }
}

/// Stores to run a test on: SQLite in a temp dir, and a fresh database on a real
/// PostgreSQL (CI always has one; elsewhere the test says why it runs on SQLite alone).
#[cfg(test)]
pub(crate) fn test_stores() -> Vec<(Option<tempfile::TempDir>, Store)> {
    #![allow(clippy::unwrap_used)]
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&dir.path().join("db")).unwrap();
    let mut out = vec![(Some(dir), sqlite)];
    match hangar_testkit::TestPostgres::shared() {
        Ok(pg) => {
            let url = pg.fresh_database();
            out.push((None, Store::connect(&Database::Postgres(url)).unwrap()));
        }
        Err(why) => eprintln!("store test on SQLite only: no PostgreSQL ({why})"),
    }
    out
}
