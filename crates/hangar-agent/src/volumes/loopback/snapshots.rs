//! The loop backend's snapshots, restores and forks: a snapshot reads the image while
//! its filesystem is frozen (after `fstrim`, so deleted files' blocks are holes) into
//! the configured [`SnapshotStore`]; a restore fills a new image from one (or from a
//! first-format file under the data dir); a fork copies a frozen live image's data
//! extents. One lock per volume keeps a take and a removal of its snapshots apart (a
//! removal frees the chunks no manifest names, which a take still being written would).

use std::path::{Path, PathBuf};

use super::host::{failed, run};
use super::LoopBackend;
use crate::volumes::snapshot::{self, legacy, SnapshotMade};
use crate::volumes::{VolumeError, VolumeSource};

impl LoopBackend {
    /// Where first-format snapshot files were kept (`<id>.zst`).
    fn legacy_file(&self, snapshot_id: &str) -> Result<PathBuf, VolumeError> {
        let ok = !snapshot_id.is_empty()
            && snapshot_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ok {
            Ok(self
                .dir
                .with_file_name("snapshots")
                .join(format!("{snapshot_id}.zst")))
        } else {
            Err(VolumeError::Invalid(format!(
                "invalid snapshot id {snapshot_id:?}"
            )))
        }
    }

    fn snapshot_turn(&self, id: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut turns = self
            .snapshot_turns
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        turns.entry(id.to_string()).or_default().clone()
    }

    /// Takes snapshot `snapshot_id` of volume `id` while its filesystem is frozen.
    pub(super) async fn take_snapshot(
        &self,
        id: &str,
        snapshot_id: &str,
    ) -> Result<SnapshotMade, VolumeError> {
        self.legacy_file(snapshot_id)?;
        let turn = self.snapshot_turn(id);
        let _held = turn.lock().await;
        let image = self.volume_dir(id)?.join("disk.img");
        let store = self.snapshots.clone();
        let (volume, snap) = (id.to_string(), snapshot_id.to_string());
        let work = async move { snapshot::take(store, image, &volume, &snap).await };
        // A raw volume has no filesystem here to freeze: the control plane snapshots it
        // only while no machine runs on it.
        let made = if self.is_raw(id)? {
            self.attach(id).await?;
            work.await?
        } else {
            self.frozen(id, work).await?
        };
        tracing::info!(volume = %id, snapshot = %snapshot_id, new_bytes = made.new_bytes, stored_bytes = made.stored_bytes, store = %self.snapshots.location(), "snapshot stored");
        Ok(made)
    }

    /// Removes a snapshot and the chunks only it named.
    pub(super) async fn remove_snapshot(
        &self,
        volume_id: &str,
        snapshot_id: &str,
    ) -> Result<(), VolumeError> {
        let legacy = self.legacy_file(snapshot_id)?;
        match std::fs::remove_file(&legacy) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed("remove the snapshot", &e)),
        }
        if volume_id.is_empty() {
            return Ok(());
        }
        self.volume_dir(volume_id)?;
        let turn = self.snapshot_turn(volume_id);
        let _held = turn.lock().await;
        let freed = snapshot::delete(self.snapshots.as_ref(), volume_id, snapshot_id).await?;
        tracing::debug!(volume = %volume_id, snapshot = %snapshot_id, freed, "snapshot removed");
        Ok(())
    }

    /// Runs `work` while volume `id`'s filesystem is frozen, so what it reads of the
    /// image is one moment's; thaws whatever happens.
    async fn frozen<T>(
        &self,
        id: &str,
        work: impl std::future::Future<Output = Result<T, VolumeError>>,
    ) -> Result<T, VolumeError> {
        let fs = self.mount(id).await?;
        // Blocks of deleted files go back to the image as holes first, so the copy
        // holds only what the filesystem still uses.
        if let Err(e) = run("fstrim", &[fs.as_os_str()]).await {
            tracing::debug!(volume = %id, error = %e, "volume not trimmed before it was read");
        }
        run("fsfreeze", &["-f".as_ref(), fs.as_os_str()]).await?;
        let done = work.await;
        let thawed = run("fsfreeze", &["-u".as_ref(), fs.as_os_str()]).await;
        let out = done?;
        thawed?;
        Ok(out)
    }

    /// Fills a new image from a snapshot, or from a live volume (a fork), then grows
    /// its filesystem to `size` if that is larger.
    pub(super) async fn fill_from(
        &self,
        source: &VolumeSource,
        image: &Path,
        size: u64,
        filesystem: bool,
    ) -> Result<(), VolumeError> {
        let taken = match source {
            VolumeSource::Snapshot {
                id: snapshot_id,
                volume_id,
            } => {
                let legacy = self.legacy_file(snapshot_id)?;
                if legacy.exists() {
                    let to = image.to_path_buf();
                    tokio::task::spawn_blocking(move || legacy::restore(&legacy, &to, size))
                        .await
                        .map_err(|e| VolumeError::Failed(format!("restore task failed: {e}")))??
                } else {
                    snapshot::restore(self.snapshots.clone(), volume_id, snapshot_id, image, size)
                        .await?
                }
            }
            VolumeSource::Volume(v) => {
                let from = self.volume_dir(v)?.join("disk.img");
                let to = image.to_path_buf();
                let copy = async move {
                    tokio::task::spawn_blocking(move || {
                        snapshot::copy_sparse(&from, &to, size)?;
                        std::fs::metadata(&from)
                            .map(|m| m.len())
                            .map_err(|e| failed("read the volume", &e))
                    })
                    .await
                    .map_err(|e| VolumeError::Failed(format!("fork task failed: {e}")))?
                };
                if self.is_raw(v)? {
                    copy.await?
                } else {
                    self.frozen(v, copy).await?
                }
            }
        };
        if filesystem && taken < size {
            run("e2fsck", &["-f".as_ref(), "-p".as_ref(), image.as_os_str()]).await?;
            run("resize2fs", &[image.as_os_str()]).await?;
        }
        Ok(())
    }
}
