//! Volumes as the API changes them: choosing the host a new volume lives on, asking its
//! agent for the blocks, and keeping the store's record true (size, settings, soft
//! deletion). The blocks are the agent's (`hangar_agent::volumes`); which machine
//! holds a volume is kept by the store as machines are created and destroyed. HTTP
//! shapes are the API layer's (`api/volumes.rs`).

pub mod keys;
pub mod snapshots;
pub mod upkeep;

use hangar_agent::volumes::{
    VolumeError, VolumeKey, VolumeOp, VolumeSource, VolumeSpec, VolumeStat,
};
use hangar_store::{AppRecord, StoreError, VolumeRecord};

use crate::{clock, ids, AppState};

/// How long a destroyed volume stays listed (with `include_deleted`), as on Fly.
const KEPT_AFTER_DESTROY_MS: i64 = 24 * 3600 * 1000;

/// Why a volume operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeFailure {
    #[error("{0}")]
    Invalid(String),
    #[error("volume not found")]
    NotFound,
    /// A machine holds the volume.
    #[error("volume {volume} is attached to machine {machine}: destroy the machine first")]
    Attached { volume: String, machine: String },
    /// No host can hold it (disk space, region, no host).
    #[error("{0}")]
    Capacity(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The host's agent failed at it.
    #[error("{0}")]
    Agent(String),
}

impl From<VolumeError> for VolumeFailure {
    fn from(e: VolumeError) -> Self {
        match e {
            VolumeError::Capacity(m) => VolumeFailure::Capacity(m),
            VolumeError::Invalid(m) => VolumeFailure::Invalid(m),
            VolumeError::NotFound(_) => VolumeFailure::NotFound,
            VolumeError::Failed(m) => VolumeFailure::Agent(m),
        }
    }
}

/// A volume to create, its fields checked by the caller.
pub struct NewVolume {
    pub name: String,
    pub region: String,
    pub size_gb: u32,
    pub fstype: String,
    pub snapshot_retention: u32,
    pub auto_backup_enabled: bool,
    /// Whether it should be encrypted at rest (it is where its host can; a restore or
    /// fork is as encrypted as its source).
    pub encrypted: bool,
    /// A snapshot (`vs_…`) to restore, or a volume (`vol_…`) to fork.
    pub source: Option<VolumeSource>,
}

/// Makes a volume: a host in its region holds the blocks, then the record is stored
/// (and the blocks removed again should that fail), so no half-made volume remains.
pub async fn create(
    state: &AppState,
    app: &AppRecord,
    new: NewVolume,
) -> Result<(VolumeRecord, VolumeStat), VolumeFailure> {
    state.placement.wait_for_a_host().await;
    let (host, key, source) = match &new.source {
        Some(source) => {
            let (host, key, source) = source_host(state, app, &new, source).await?;
            (host, key, Some(source))
        }
        None => (
            state
                .placement
                .choose(&new.region, 0, 0)
                .map_err(|e| VolumeFailure::Capacity(e.to_string()))?
                .id,
            new.encrypted.then(keys::fresh),
            None,
        ),
    };
    let id = ids::volume_id();
    let spec = VolumeSpec {
        id: id.clone(),
        size_gb: new.size_gb,
        fstype: new.fstype.clone(),
        source,
        key: key.as_deref().map(VolumeKey::from_bytes),
    };
    let made = state.agent.api().volume(&VolumeOp::Create(spec)).await?;
    let sealed_key = match key.filter(|_| made.encrypted) {
        Some(k) => match keys::seal(state, &id, &k) {
            Ok(sealed) => Some(sealed),
            Err(e) => {
                let _ = state.agent.api().volume(&VolumeOp::Destroy { id }).await;
                return Err(e);
            }
        },
        None => None,
    };
    let stat = made.stat;
    let record = VolumeRecord {
        id: id.clone(),
        app_name: app.name.clone(),
        name: new.name,
        region: new.region,
        zone: ids::zone(&host),
        host,
        size_gb: i64::from(new.size_gb),
        state: "created".into(),
        encrypted: sealed_key.is_some(),
        fstype: new.fstype,
        attached_machine_id: None,
        snapshot_retention: i64::from(new.snapshot_retention),
        auto_backup_enabled: new.auto_backup_enabled,
        created_at: clock::rfc3339_now(),
        deleted_at_ms: None,
        sealed_key,
    };
    let r = record.clone();
    if let Err(e) = state.store.call(move |db| db.insert_volume(&r)).await {
        let _ = state.agent.api().volume(&VolumeOp::Destroy { id }).await;
        return Err(e.into());
    }
    tracing::info!(app = %record.app_name, volume = %record.id, size_gb = record.size_gb, "volume created");
    Ok((record, stat))
}

/// The host a restored or forked volume must be made on (where its source's blocks
/// are) and the key they are encrypted with, once the source is found to be the app's
/// and fit.
async fn source_host(
    state: &AppState,
    app: &AppRecord,
    new: &NewVolume,
    source: &VolumeSource,
) -> Result<(String, Option<Vec<u8>>, VolumeSource), VolumeFailure> {
    match source {
        VolumeSource::Snapshot { id, .. } => {
            let (a, i) = (app.name.clone(), id.clone());
            let snap = state
                .store
                .call(move |db| db.snapshot(&a, &i))
                .await?
                .ok_or_else(|| {
                    VolumeFailure::Invalid(format!("snapshot {id} not found in app {}", app.name))
                })?;
            let taken_gb = (snap.volume_size as u64).div_ceil(1 << 30);
            if u64::from(new.size_gb) < taken_gb {
                return Err(VolumeFailure::Invalid(format!(
                    "snapshot {id} is of a {taken_gb} GB volume: restore it with a size of at least {taken_gb} GB"
                )));
            }
            let of = load(state, &app.name, &snap.volume_id).await.ok();
            if let Some(of) = of.filter(|of| of.fstype != new.fstype) {
                return Err(VolumeFailure::Invalid(format!(
                    "snapshot {id} is of a volume with fstype {}: restore it with fstype {}",
                    of.fstype, of.fstype
                )));
            }
            let key = match &snap.sealed_key {
                Some(sealed) => Some(keys::open(state, &snap.id, sealed)?),
                None => None,
            };
            let source = VolumeSource::Snapshot {
                id: snap.id.clone(),
                volume_id: snap.volume_id.clone(),
            };
            Ok((snap.host, key, source))
        }
        VolumeSource::Volume(id) => {
            let v = load(state, &app.name, id).await.map_err(|_| {
                VolumeFailure::Invalid(format!("source volume {id} not found in app {}", app.name))
            })?;
            live(&v)?;
            if i64::from(new.size_gb) < v.size_gb {
                return Err(VolumeFailure::Invalid(format!(
                    "volume {id} is {} GB: fork it with a size of at least {} GB",
                    v.size_gb, v.size_gb
                )));
            }
            if v.region != new.region {
                return Err(VolumeFailure::Invalid(format!(
                    "volume {id} is in region {}: fork it within {} (hosts of other regions cannot copy it yet)",
                    v.region, v.region
                )));
            }
            if v.fstype != new.fstype {
                return Err(VolumeFailure::Invalid(format!(
                    "volume {id} has fstype {}: fork it with fstype {}",
                    v.fstype, v.fstype
                )));
            }
            raw_at_rest(state, &v, "fork").await?;
            let key = match &v.sealed_key {
                Some(sealed) => Some(keys::open(state, &v.id, sealed)?),
                None => None,
            };
            Ok((v.host, key, source.clone()))
        }
    }
}

/// One of the app's volumes; destroyed ones (within the day they stay) included.
pub async fn load(state: &AppState, app: &str, id: &str) -> Result<VolumeRecord, VolumeFailure> {
    let (app, id) = (app.to_string(), id.to_string());
    state
        .store
        .call(move |db| db.volume(&app, &id))
        .await?
        .ok_or(VolumeFailure::NotFound)
}

/// The app's volumes, destroyed ones only when asked; rows past their day go first.
pub async fn list(
    state: &AppState,
    app: &str,
    include_deleted: bool,
) -> Result<Vec<VolumeRecord>, VolumeFailure> {
    let app = app.to_string();
    let before = clock::now_ms() - KEPT_AFTER_DESTROY_MS;
    Ok(state
        .store
        .call(move |db| {
            db.purge_volumes(before)?;
            db.volumes(&app, include_deleted)
        })
        .await?)
}

/// The volume's filesystem as its host measures it now; `None` when it cannot say
/// (a destroyed volume, an agent away).
pub async fn stat(state: &AppState, v: &VolumeRecord) -> Option<VolumeStat> {
    if v.deleted_at_ms.is_some() {
        return None;
    }
    match state
        .agent
        .api()
        .volume(&VolumeOp::Stat { id: v.id.clone() })
        .await
    {
        Ok(r) => Some(r.stat),
        Err(e) => {
            tracing::warn!(volume = %v.id, error = %e, "volume cannot be measured");
            None
        }
    }
}

/// Grows a volume to `size_gb`, online where its host can; returns it and whether its
/// machine must restart to see the space.
pub async fn extend(
    state: &AppState,
    v: VolumeRecord,
    size_gb: u32,
) -> Result<(VolumeRecord, VolumeStat, bool), VolumeFailure> {
    live(&v)?;
    if i64::from(size_gb) <= v.size_gb {
        return Err(VolumeFailure::Invalid(format!(
            "a volume can only grow: {} is {} GB, so ask for more than {} GB",
            v.id, v.size_gb, v.size_gb
        )));
    }
    let op = VolumeOp::Extend {
        id: v.id.clone(),
        size_gb,
    };
    let stat = state.agent.api().volume(&op).await?.stat;
    let id = v.id.clone();
    state
        .store
        .call(move |db| db.set_volume_size(&id, i64::from(size_gb), "created"))
        .await?;
    tracing::info!(volume = %v.id, size_gb, "volume extended");
    let v = VolumeRecord {
        size_gb: i64::from(size_gb),
        ..v
    };
    // The filesystem grew now unless it is still the old size (its host could not grow
    // it mounted): then it grows when its machine next starts.
    let needs_restart =
        stat.bytes_total() <= (v.size_gb as u64 - 1) << 30 && v.attached_machine_id.is_some();
    Ok((v, stat, needs_restart))
}

/// Changes a volume's snapshot settings.
pub async fn update(
    state: &AppState,
    v: VolumeRecord,
    snapshot_retention: Option<u32>,
    auto_backup_enabled: Option<bool>,
) -> Result<VolumeRecord, VolumeFailure> {
    live(&v)?;
    let v = VolumeRecord {
        snapshot_retention: snapshot_retention.map_or(v.snapshot_retention, i64::from),
        auto_backup_enabled: auto_backup_enabled.unwrap_or(v.auto_backup_enabled),
        ..v
    };
    let (id, days, auto) = (v.id.clone(), v.snapshot_retention, v.auto_backup_enabled);
    state
        .store
        .call(move |db| db.update_volume_settings(&id, days, auto))
        .await?;
    Ok(v)
}

/// Destroys a volume no machine holds: its record is kept a day as `pending_destroy`
/// and its blocks are removed from the host.
pub async fn destroy(state: &AppState, v: VolumeRecord) -> Result<VolumeRecord, VolumeFailure> {
    live(&v)?;
    if let Some(machine) = v.attached_machine_id.clone() {
        return Err(VolumeFailure::Attached {
            volume: v.id,
            machine,
        });
    }
    let (id, now) = (v.id.clone(), clock::now_ms());
    let marked = state
        .store
        .call(move |db| db.soft_delete_volume(&id, now))
        .await?;
    if !marked {
        // A machine took it meanwhile.
        let again = load(state, &v.app_name, &v.id).await?;
        return Err(VolumeFailure::Attached {
            volume: again.id,
            machine: again.attached_machine_id.unwrap_or_default(),
        });
    }
    if let Err(e) = state
        .agent
        .api()
        .volume(&VolumeOp::Destroy { id: v.id.clone() })
        .await
    {
        tracing::error!(volume = %v.id, error = %e, "destroyed volume's blocks could not be removed");
    }
    tracing::info!(volume = %v.id, "volume destroyed");
    Ok(VolumeRecord {
        state: "pending_destroy".into(),
        deleted_at_ms: Some(now),
        ..v
    })
}

/// Removes the blocks of every volume of an app being deleted (its records go with the
/// app).
pub async fn destroy_all_of(state: &AppState, app: &str) -> Result<(), VolumeFailure> {
    snapshots::delete_all_of(state, app).await?;
    for v in list(state, app, false).await? {
        if let Err(e) = state
            .agent
            .api()
            .volume(&VolumeOp::Destroy { id: v.id.clone() })
            .await
        {
            tracing::error!(volume = %v.id, error = %e, "volume's blocks could not be removed");
        }
    }
    Ok(())
}

/// Gives a config whose mount names its volume only by name (a deploy from fly.toml)
/// a volume: a free one of that name in the region, else a new one of the mount's
/// `size_gb` (1 GB when unset, as flyctl's `initial_size`). Returns the volume made,
/// if one was.
pub async fn for_new_machine(
    state: &AppState,
    app: &AppRecord,
    region: &str,
    config: &mut hangar_types::MachineConfig,
) -> Result<Option<VolumeRecord>, VolumeFailure> {
    let Some(mount) = config.mounts.as_deref_mut().and_then(|m| m.first_mut()) else {
        return Ok(None);
    };
    if !mount.volume.is_empty() {
        return Ok(None);
    }
    let name = mount.name.clone().unwrap_or_else(|| "data".into());
    let free = list(state, &app.name, false)
        .await?
        .into_iter()
        .find(|v| v.name == name && v.region == region && v.attached_machine_id.is_none());
    if let Some(v) = free {
        mount.volume = v.id;
        return Ok(None);
    }
    let new = NewVolume {
        name: name.clone(),
        region: region.to_string(),
        size_gb: mount
            .size_gb
            .unwrap_or(1)
            .clamp(1, hangar_types::volume::MAX_VOLUME_GB),
        fstype: "ext4".into(),
        snapshot_retention: hangar_types::volume::DEFAULT_SNAPSHOT_RETENTION,
        auto_backup_enabled: true,
        encrypted: mount.encrypted.unwrap_or(true),
        source: None,
    };
    let (v, _) = create(state, app, new).await?;
    mount.volume = v.id.clone();
    Ok(Some(v))
}

/// Refuses to read a raw volume's blocks (a snapshot or a fork) while a machine may be
/// writing them: there is no filesystem on the host to freeze.
pub(crate) async fn raw_at_rest(
    state: &AppState,
    v: &VolumeRecord,
    what: &str,
) -> Result<(), VolumeFailure> {
    use hangar_types::MachineState as S;
    let Some(machine_id) = v.attached_machine_id.clone().filter(|_| v.fstype == "raw") else {
        return Ok(());
    };
    let m = state
        .store
        .call(move |db| db.machine_by_id(&machine_id))
        .await?;
    match m {
        Some(m) if !matches!(m.state, S::Created | S::Stopped | S::Destroyed) => {
            Err(VolumeFailure::Invalid(format!(
                "volume {} is raw and machine {} may be writing to it ({}): Hangar cannot freeze a raw volume, so stop the machine to {what} it",
                v.id, m.id, m.state
            )))
        }
        _ => Ok(()),
    }
}

pub(crate) fn live(v: &VolumeRecord) -> Result<(), VolumeFailure> {
    if v.deleted_at_ms.is_some() {
        Err(VolumeFailure::Invalid(format!(
            "volume {} is destroyed; create a new one",
            v.id
        )))
    } else {
        Ok(())
    }
}
