//! The agent's own store: a SQLite file on its host (`agent.db` under the data dir)
//! holding every machine the agent runs as it last recorded it, the newest events of
//! each, and an outbox of the changes the control plane has not yet acknowledged.
//!
//! It is the truth for what runs on this host: every transition is written here before
//! the driver acts, and after a restart the supervisor reloads its machines from here
//! whether or not the control plane answers. It holds no apps, releases or secrets
//! (those are the control plane's), and it does not send the outbox: the mirror does.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hangar_store::MachineRecord;
use hangar_types::observed::MachineChange;
use hangar_types::{MachineEvent, MachineState};
use rusqlite::{params, Connection};

/// Events kept per machine: enough for reconciliation to learn how an update meant to
/// end. The full log is the control plane's.
const KEPT_EVENTS: i64 = 20;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS machines (
        id TEXT PRIMARY KEY,
        record TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS events (
        id TEXT PRIMARY KEY,
        machine_id TEXT NOT NULL,
        event TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS events_by_machine ON events (machine_id, id);
    CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        change TEXT NOT NULL
    );
";

/// The version of [`SCHEMA`]; a file with a newer one is refused.
const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("agent store {path}: {error}")]
    Sqlite {
        path: String,
        error: rusqlite::Error,
    },
    #[error("agent store {path} has schema version {found}, newer than this hangar understands ({SCHEMA_VERSION}); upgrade hangar")]
    TooNew { path: String, found: i64 },
    #[error("agent store: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    InUse(#[from] hangar_store::StoreError),
    #[error("agent store task: {0}")]
    Task(String),
}

type Result<T> = std::result::Result<T, LedgerError>;

/// A handle to the agent's store; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
    /// Held while open: one agent per file.
    _lock: Arc<std::fs::File>,
}

impl Ledger {
    /// Opens (creating if needed) the agent's store at `path`. Returns whether it was
    /// new, so a host that ran machines before the agent had a store of its own can
    /// bring them in.
    pub fn open(path: &Path) -> Result<(Ledger, bool)> {
        let lock = hangar_store::lock_sqlite(path)?;
        let fresh = !path.exists();
        let err = |error| LedgerError::Sqlite {
            path: path.display().to_string(),
            error,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if found > SCHEMA_VERSION {
            return Err(LedgerError::TooNew {
                path: path.display().to_string(),
                found,
            });
        }
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err)?;
        let ledger = Ledger {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path.to_path_buf()),
            _lock: Arc::new(lock),
        };
        Ok((ledger, fresh))
    }

    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R> {
        let conn = self.conn.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard).map_err(|error| LedgerError::Sqlite {
                path: path.display().to_string(),
                error,
            })
        })
        .await
        .map_err(|e| LedgerError::Task(e.to_string()))?
    }

    /// Every machine on this host that is not destroyed, oldest first.
    pub async fn machines(&self) -> Result<Vec<MachineRecord>> {
        let rows = self
            .call(|c| {
                let mut st = c.prepare("SELECT record FROM machines")?;
                let rows = st.query_map([], |r| r.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
            })
            .await?;
        let mut machines = rows
            .iter()
            .map(|r| serde_json::from_str::<MachineRecord>(r))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        machines.retain(|m| m.state != MachineState::Destroyed);
        machines.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(machines)
    }

    /// Takes a machine the control plane just created (its launch is the control
    /// plane's to record), or one brought in from before the agent had a store.
    pub async fn put(&self, machine: &MachineRecord) -> Result<()> {
        let (id, record) = (machine.id.clone(), serde_json::to_string(machine)?);
        self.call(move |c| {
            c.execute(
                "INSERT INTO machines (id, record) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                params![id, record],
            )
        })
        .await?;
        Ok(())
    }

    /// Records how `machine` looks after `change`, the change's event, and the change
    /// for the control plane, in one transaction. Returns the change's place in the
    /// outbox. A destroyed machine leaves the store (its change stays in the outbox).
    pub async fn record(&self, machine: &MachineRecord, change: &MachineChange) -> Result<i64> {
        let id = machine.id.clone();
        let destroyed = machine.state == MachineState::Destroyed;
        let record = serde_json::to_string(machine)?;
        let change_json = serde_json::to_string(change)?;
        let event = change
            .event()
            .map(|e| Ok::<_, serde_json::Error>((e.id.clone(), serde_json::to_string(e)?)))
            .transpose()?;
        self.call(move |c| {
            let tx = c.transaction()?;
            if destroyed {
                tx.execute("DELETE FROM machines WHERE id = ?1", params![id])?;
                tx.execute("DELETE FROM events WHERE machine_id = ?1", params![id])?;
            } else {
                tx.execute(
                    "INSERT INTO machines (id, record) VALUES (?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                    params![id, record],
                )?;
                if let Some((event_id, event)) = event {
                    tx.execute(
                        "INSERT OR IGNORE INTO events (id, machine_id, event) VALUES (?1, ?2, ?3)",
                        params![event_id, id, event],
                    )?;
                    tx.execute(
                        "DELETE FROM events WHERE machine_id = ?1 AND id < (
                             SELECT id FROM events WHERE machine_id = ?1
                             ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                        params![id, KEPT_EVENTS - 1],
                    )?;
                }
            }
            tx.execute(
                "INSERT INTO outbox (change) VALUES (?1)",
                params![change_json],
            )?;
            let seq = tx.last_insert_rowid();
            tx.commit()?;
            Ok(seq)
        })
        .await
    }

    /// The machine's newest events, newest first.
    pub async fn events(&self, machine_id: &str, limit: usize) -> Result<Vec<MachineEvent>> {
        let id = machine_id.to_string();
        let rows = self
            .call(move |c| {
                let mut st = c.prepare(
                    "SELECT event FROM events WHERE machine_id = ?1 ORDER BY id DESC LIMIT ?2",
                )?;
                let rows = st.query_map(params![id, limit as i64], |r| r.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| serde_json::from_str(r))
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Up to `limit` changes the control plane has not acknowledged, oldest first.
    pub(crate) async fn unsent(&self, limit: usize) -> Result<Vec<(i64, MachineChange)>> {
        let rows = self
            .call(move |c| {
                let mut st = c.prepare("SELECT seq, change FROM outbox ORDER BY seq LIMIT ?1")?;
                let rows = st.query_map(params![limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter()
            .map(|(seq, c)| Ok((seq, serde_json::from_str(&c)?)))
            .collect()
    }

    /// Forgets the changes up to `seq`: the control plane has them.
    pub(crate) async fn acknowledge(&self, seq: i64) -> Result<()> {
        self.call(move |c| c.execute("DELETE FROM outbox WHERE seq <= ?1", params![seq]))
            .await?;
        Ok(())
    }

    /// How many changes wait for the control plane.
    pub async fn backlog(&self) -> Result<i64> {
        self.call(|c| c.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0)))
            .await
    }
}
