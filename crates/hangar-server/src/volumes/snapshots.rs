//! Volume snapshots as the control plane keeps them: taking one on demand or on the
//! daily schedule (each volume with `auto_backup_enabled` gets one a day), and removing
//! those past their retention. The snapshots' blocks are stored and removed by the
//! agent of the volume's host (`hangar_agent::volumes::snapshot`, in a directory or an
//! S3-compatible bucket); their rows are here.

use hangar_agent::volumes::VolumeOp;
use hangar_store::{SnapshotRecord, VolumeRecord};

use super::VolumeFailure;
use crate::{clock, ids, AppState};

const DAY_MS: i64 = 24 * 3600 * 1000;

pub const ON_DEMAND: &str = "BACKUP_TYPE_ON_DEMAND";
pub const SCHEDULED: &str = "BACKUP_TYPE_SCHEDULED";

/// Takes a consistent snapshot of a live volume now (its filesystem frozen while its
/// blocks are read) and records it.
pub async fn take(
    state: &AppState,
    v: &VolumeRecord,
    kind: &str,
) -> Result<SnapshotRecord, VolumeFailure> {
    super::live(v)?;
    super::raw_at_rest(state, v, "snapshot").await?;
    let id = ids::snapshot_id();
    // The key its blocks are encrypted with, sealed for the snapshot (which outlives
    // the volume), before anything is made.
    let sealed_key = match &v.sealed_key {
        Some(sealed) => Some(super::keys::seal(
            state,
            &id,
            &super::keys::open(state, &v.id, sealed)?,
        )?),
        None => None,
    };
    let op = VolumeOp::Snapshot {
        id: v.id.clone(),
        snapshot_id: id.clone(),
    };
    let made = state
        .agent
        .api()
        .volume(&op)
        .await?
        .snapshot
        .ok_or_else(|| VolumeFailure::Agent("the host took no snapshot".into()))?;
    let record = SnapshotRecord {
        id: id.clone(),
        app_name: v.app_name.clone(),
        volume_id: v.id.clone(),
        host: v.host.clone(),
        status: "created".into(),
        kind: kind.to_string(),
        size: made.stored_bytes as i64,
        volume_size: made.volume_bytes as i64,
        digest: made.digest.clone(),
        retention_days: v.snapshot_retention,
        created_at: clock::rfc3339_now(),
        created_at_ms: clock::now_ms(),
        sealed_key,
    };
    let r = record.clone();
    if let Err(e) = state.store.call(move |db| db.insert_snapshot(&r)).await {
        let _ = state
            .agent
            .api()
            .volume(&VolumeOp::DeleteSnapshot {
                volume_id: v.id.clone(),
                snapshot_id: id,
            })
            .await;
        return Err(e.into());
    }
    tracing::info!(volume = %v.id, snapshot = %record.id, bytes = record.size, new_bytes = made.new_bytes, kind, "volume snapshot taken");
    Ok(record)
}

/// A volume's snapshots, oldest first (kept while within retention, even after the
/// volume is destroyed).
pub async fn list(state: &AppState, volume_id: &str) -> Result<Vec<SnapshotRecord>, VolumeFailure> {
    let id = volume_id.to_string();
    Ok(state.store.call(move |db| db.snapshots_of(&id)).await?)
}

/// Removes the snapshots past their retention: the file, then the row.
pub async fn expire(state: &AppState, now_ms: i64) -> Result<usize, VolumeFailure> {
    let expired = state
        .store
        .call(move |db| db.expired_snapshots(now_ms))
        .await?;
    for s in &expired {
        remove(state, s).await?;
    }
    Ok(expired.len())
}

async fn remove(state: &AppState, s: &SnapshotRecord) -> Result<(), VolumeFailure> {
    let op = VolumeOp::DeleteSnapshot {
        volume_id: s.volume_id.clone(),
        snapshot_id: s.id.clone(),
    };
    state.agent.api().volume(&op).await?;
    let id = s.id.clone();
    state.store.call(move |db| db.delete_snapshot(&id)).await?;
    Ok(())
}

/// Removes every snapshot of an app being deleted.
pub async fn delete_all_of(state: &AppState, app: &str) -> Result<(), VolumeFailure> {
    let a = app.to_string();
    for s in state.store.call(move |db| db.snapshots_of_app(&a)).await? {
        if let Err(e) = remove(state, &s).await {
            tracing::error!(snapshot = %s.id, error = %e, "snapshot could not be removed");
        }
    }
    Ok(())
}

/// One pass of the schedule: a snapshot for every volume with scheduled snapshots that
/// has none from the last day, then expiry. Returns how many were taken.
pub async fn scheduled_pass(state: &AppState, now_ms: i64) -> Result<usize, VolumeFailure> {
    let volumes = state.store.call(|db| db.live_volumes()).await?;
    let mut taken = 0;
    for v in volumes.iter().filter(|v| v.auto_backup_enabled) {
        let latest = list(state, &v.id).await?.last().map(|s| s.created_at_ms);
        if latest.is_some_and(|at| now_ms - at < DAY_MS) {
            continue;
        }
        // A raw volume in use waits for its machine to stop (it cannot be frozen).
        if super::raw_at_rest(state, v, "snapshot").await.is_err() {
            continue;
        }
        match take(state, v, SCHEDULED).await {
            Ok(_) => taken += 1,
            Err(e) => tracing::warn!(volume = %v.id, error = %e, "scheduled snapshot failed"),
        }
    }
    expire(state, now_ms).await?;
    Ok(taken)
}
