//! Rows of volume snapshots: which volume, where the file is (its host), how big, and
//! how long it is kept. The files are the agent's; taking and expiring them is the
//! control plane's (`hangar-server/src/volumes/snapshots.rs`).

use crate::sql::{args, Row};
use crate::{Db, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub id: String,
    pub app_name: String,
    pub volume_id: String,
    pub host: String,
    /// `created`.
    pub status: String,
    /// Fly's `type`: `BACKUP_TYPE_ON_DEMAND` or `BACKUP_TYPE_SCHEDULED`.
    pub kind: String,
    /// Bytes stored.
    pub size: i64,
    /// The volume's size when taken, in bytes.
    pub volume_size: i64,
    pub digest: String,
    pub retention_days: i64,
    pub created_at: String,
    pub created_at_ms: i64,
    /// The key its blocks are encrypted with, sealed for this snapshot.
    pub sealed_key: Option<Vec<u8>>,
}

const COLUMNS: &str = "id, app_name, volume_id, host, status, kind, size, volume_size, digest, \
    retention_days, created_at, created_at_ms, sealed_key";

fn from_row(r: &Row) -> Result<SnapshotRecord> {
    Ok(SnapshotRecord {
        id: r.get(0)?,
        app_name: r.get(1)?,
        volume_id: r.get(2)?,
        host: r.get(3)?,
        status: r.get(4)?,
        kind: r.get(5)?,
        size: r.get(6)?,
        volume_size: r.get(7)?,
        digest: r.get(8)?,
        retention_days: r.get(9)?,
        created_at: r.get(10)?,
        created_at_ms: r.get(11)?,
        sealed_key: r.get(12)?,
    })
}

impl Db<'_> {
    pub fn insert_snapshot(&mut self, s: &SnapshotRecord) -> Result<()> {
        self.conn.execute(
            &format!("INSERT INTO volume_snapshots ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
            args![
                &s.id, &s.app_name, &s.volume_id, &s.host, &s.status, &s.kind, s.size,
                s.volume_size, &s.digest, s.retention_days, &s.created_at, s.created_at_ms,
                s.sealed_key.as_ref()
            ],
        )?;
        Ok(())
    }

    /// One of an app's snapshots.
    pub fn snapshot(&mut self, app: &str, id: &str) -> Result<Option<SnapshotRecord>> {
        self.conn
            .query_opt(
                &format!("SELECT {COLUMNS} FROM volume_snapshots WHERE app_name = ?1 AND id = ?2"),
                args![app, id],
            )?
            .map(|r| from_row(&r))
            .transpose()
    }

    /// A volume's snapshots, oldest first.
    pub fn snapshots_of(&mut self, volume_id: &str) -> Result<Vec<SnapshotRecord>> {
        self.conn
            .query(
                &format!("SELECT {COLUMNS} FROM volume_snapshots WHERE volume_id = ?1 ORDER BY created_at_ms, id"),
                args![volume_id],
            )?
            .iter()
            .map(from_row)
            .collect()
    }

    /// Snapshots past their retention at `now_ms`.
    pub fn expired_snapshots(&mut self, now_ms: i64) -> Result<Vec<SnapshotRecord>> {
        self.conn
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM volume_snapshots WHERE created_at_ms + retention_days * 86400000 < ?1"
                ),
                args![now_ms],
            )?
            .iter()
            .map(from_row)
            .collect()
    }

    /// Every snapshot of an app (to remove their files when it goes).
    pub fn snapshots_of_app(&mut self, app: &str) -> Result<Vec<SnapshotRecord>> {
        self.conn
            .query(
                &format!("SELECT {COLUMNS} FROM volume_snapshots WHERE app_name = ?1"),
                args![app],
            )?
            .iter()
            .map(from_row)
            .collect()
    }

    pub fn delete_snapshot(&mut self, id: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM volume_snapshots WHERE id = ?1", args![id])?;
        Ok(())
    }
}
