//! Rows of volumes: each volume's name, place (region, zone, host), size, settings and
//! the machine that holds it. The blocks themselves are the agent's; this is what the
//! control plane knows and answers the Volumes API from. Attaching happens in the
//! transaction that stores the machine (`machines.rs`), detaching in the one that
//! records its destruction (`observed.rs`), so `attached_machine_id` stays true.

use crate::sql::{args, Conn, Row};
use crate::{Db, Result};

/// A volume as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    pub id: String,
    pub app_name: String,
    pub name: String,
    pub region: String,
    /// Fly's 4-hex zone: which host, in a form users see.
    pub zone: String,
    /// The placement host id whose agent holds the blocks.
    pub host: String,
    pub size_gb: i64,
    /// `created`, `extending`, `restoring`, `pending_destroy` or `destroyed`.
    pub state: String,
    pub encrypted: bool,
    pub fstype: String,
    pub attached_machine_id: Option<String>,
    pub snapshot_retention: i64,
    pub auto_backup_enabled: bool,
    pub created_at: String,
    /// When it was destroyed (soft-deleted), in ms since the epoch.
    pub deleted_at_ms: Option<i64>,
    /// An encrypted volume's key, sealed under the master key (`None`: not encrypted).
    pub sealed_key: Option<Vec<u8>>,
}

const VOLUME_COLUMNS: &str = "id, app_name, name, region, zone, host, size_gb, state, \
    encrypted, fstype, attached_machine_id, snapshot_retention, auto_backup_enabled, \
    created_at, deleted_at_ms, sealed_key";

fn volume_from_row(r: &Row) -> Result<VolumeRecord> {
    Ok(VolumeRecord {
        id: r.get(0)?,
        app_name: r.get(1)?,
        name: r.get(2)?,
        region: r.get(3)?,
        zone: r.get(4)?,
        host: r.get(5)?,
        size_gb: r.get(6)?,
        state: r.get(7)?,
        encrypted: r.get(8)?,
        fstype: r.get(9)?,
        attached_machine_id: r.get(10)?,
        snapshot_retention: r.get(11)?,
        auto_backup_enabled: r.get(12)?,
        created_at: r.get(13)?,
        deleted_at_ms: r.get(14)?,
        sealed_key: r.get(15)?,
    })
}

/// Why a machine cannot take a volume: the volume's state as found, for the caller's
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachRefusal {
    NotFound,
    AttachedTo(String),
}

impl Db<'_> {
    pub fn insert_volume(&mut self, v: &VolumeRecord) -> Result<()> {
        self.conn.execute(
            &format!(
                "INSERT INTO volumes ({VOLUME_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
            ),
            args![
                &v.id, &v.app_name, &v.name, &v.region, &v.zone, &v.host, v.size_gb, &v.state,
                v.encrypted, &v.fstype, &v.attached_machine_id, v.snapshot_retention,
                v.auto_backup_enabled, &v.created_at, v.deleted_at_ms, v.sealed_key.as_ref()
            ],
        )?;
        Ok(())
    }

    /// One of an app's volumes, destroyed ones included.
    pub fn volume(&mut self, app: &str, id: &str) -> Result<Option<VolumeRecord>> {
        self.conn
            .query_opt(
                &format!("SELECT {VOLUME_COLUMNS} FROM volumes WHERE app_name = ?1 AND id = ?2"),
                args![app, id],
            )?
            .map(|r| volume_from_row(&r))
            .transpose()
    }

    /// An app's volumes, oldest first; destroyed ones only with `include_deleted`.
    pub fn volumes(&mut self, app: &str, include_deleted: bool) -> Result<Vec<VolumeRecord>> {
        self.conn
            .query(
                &format!(
                    "SELECT {VOLUME_COLUMNS} FROM volumes WHERE app_name = ?1 AND (?2 = 1 OR deleted_at_ms IS NULL)
                     ORDER BY created_at, id"
                ),
                args![app, include_deleted],
            )?
            .iter()
            .map(volume_from_row)
            .collect()
    }

    /// Every volume not destroyed, on every app (for the agent's checks at start).
    pub fn live_volumes(&mut self) -> Result<Vec<VolumeRecord>> {
        self.conn
            .query(
                &format!(
                    "SELECT {VOLUME_COLUMNS} FROM volumes WHERE deleted_at_ms IS NULL ORDER BY created_at, id"
                ),
                &[],
            )?
            .iter()
            .map(volume_from_row)
            .collect()
    }

    /// Sets a volume's size and state (an extend, and its end).
    pub fn set_volume_size(&mut self, id: &str, size_gb: i64, state: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE volumes SET size_gb = ?2, state = ?3 WHERE id = ?1",
            args![id, size_gb, state],
        )?;
        Ok(())
    }

    pub fn set_volume_state(&mut self, id: &str, state: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE volumes SET state = ?2 WHERE id = ?1",
            args![id, state],
        )?;
        Ok(())
    }

    /// Changes a volume's snapshot settings.
    pub fn update_volume_settings(
        &mut self,
        id: &str,
        snapshot_retention: i64,
        auto_backup_enabled: bool,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE volumes SET snapshot_retention = ?2, auto_backup_enabled = ?3 WHERE id = ?1",
            args![id, snapshot_retention, auto_backup_enabled],
        )?;
        Ok(())
    }

    /// Marks an unattached volume destroyed at `now_ms`; false when a machine holds it
    /// (or it is already gone), and nothing changes.
    pub fn soft_delete_volume(&mut self, id: &str, now_ms: i64) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE volumes SET state = 'pending_destroy', deleted_at_ms = ?2
             WHERE id = ?1 AND attached_machine_id IS NULL AND deleted_at_ms IS NULL",
            args![id, now_ms],
        )?;
        Ok(n == 1)
    }

    /// Volumes destroyed before `before_ms` whose rows can go: returned, then removed.
    pub fn purge_volumes(&mut self, before_ms: i64) -> Result<Vec<VolumeRecord>> {
        let gone: Vec<VolumeRecord> = self
            .conn
            .query(
                &format!("SELECT {VOLUME_COLUMNS} FROM volumes WHERE deleted_at_ms < ?1"),
                args![before_ms],
            )?
            .iter()
            .map(volume_from_row)
            .collect::<Result<_>>()?;
        self.conn.execute(
            "DELETE FROM volumes WHERE deleted_at_ms < ?1",
            args![before_ms],
        )?;
        Ok(gone)
    }
}

/// Gives a new machine the volumes its config mounts, inside the transaction that
/// stores it: a volume that is gone, or another machine's, fails the whole insert.
pub(crate) fn attach_mounts(tx: &mut Conn, m: &crate::MachineRecord) -> Result<()> {
    for mount in m.config.mounts.as_deref().unwrap_or_default() {
        match attach(tx, &m.app_name, &mount.volume, &m.id)? {
            Ok(()) => {}
            Err(AttachRefusal::NotFound) => {
                return Err(crate::StoreError::Invalid(format!(
                    "volume not found: {} is not a volume of app {}",
                    mount.volume, m.app_name
                )))
            }
            Err(AttachRefusal::AttachedTo(other)) => {
                return Err(crate::StoreError::Conflict(format!(
                    "volume {} is attached to machine {other}; use another volume or destroy that machine",
                    mount.volume
                )))
            }
        }
    }
    Ok(())
}

/// Gives `volume` (of `app`) to `machine` inside the caller's transaction, or says why
/// it cannot be given.
fn attach(
    tx: &mut Conn,
    app: &str,
    volume: &str,
    machine: &str,
) -> Result<std::result::Result<(), AttachRefusal>> {
    let n = tx.execute(
        "UPDATE volumes SET attached_machine_id = ?3
         WHERE id = ?2 AND app_name = ?1 AND deleted_at_ms IS NULL
           AND (attached_machine_id IS NULL OR attached_machine_id = ?3)",
        args![app, volume, machine],
    )?;
    if n == 1 {
        return Ok(Ok(()));
    }
    let holder = tx.query_opt(
        "SELECT attached_machine_id FROM volumes WHERE id = ?2 AND app_name = ?1 AND deleted_at_ms IS NULL",
        args![app, volume],
    )?;
    Ok(Err(match holder {
        Some(r) => match r.get::<Option<String>>(0)? {
            Some(other) => AttachRefusal::AttachedTo(other),
            None => AttachRefusal::NotFound,
        },
        None => AttachRefusal::NotFound,
    }))
}

/// Lets go of whatever volume `machine` holds, inside the caller's transaction.
pub(crate) fn detach(tx: &mut Conn, machine: &str) -> Result<()> {
    tx.defer(
        "UPDATE volumes SET attached_machine_id = NULL WHERE attached_machine_id = ?1",
        args![machine],
    )
}
