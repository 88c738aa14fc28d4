//! The default volume backend: each volume is a sparse image file of exactly its size
//! holding an ext4 filesystem, attached through a loop device (direct I/O, so its
//! blocks are not cached twice) and mounted under the agent's data dir. Layout, per volume: `<dir>/<id>/disk.img` and the mount point
//! `<dir>/<id>/fs`. Writes go to the filesystem and from it to the image file, so
//! they survive a crash of Hangar (what the kernel has not flushed is as safe as on any
//! ext4 mount). Growing is online where the host allows it: the file grows, the loop
//! device is told, and `resize2fs` grows the mounted filesystem; where the agent lacks
//! `CAP_SYS_RESOURCE` (which online growth needs) the filesystem grows unmounted at the
//! machine's next start. An encrypted volume (ext4 native encryption, `fscrypt.rs`) shows
//! machines its `fs/data` directory, encrypted with the key the control plane gave; the
//! key is kept in memory only and given to the filesystem at every mount. Needs root
//! (loop devices and `mount`). Snapshots, restores and forks are `snapshots.rs`; the
//! host tools this is made of (mkfs, losetup, mount, statvfs) are `host.rs`.

mod host;
mod raw;
mod snapshots;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use self::host::{
    failed, format, guard_mount_point, is_mount_point, loop_device, mount_device, room_for,
    root_needed, run, statvfs,
};
use super::fscrypt::{self, VolumeKey};
use super::snapshot::store::SnapshotStore;
use super::snapshot::SnapshotMade;
use super::{VolumeBackend, VolumeError, VolumeSpec, VolumeStat};

const GB: u64 = 1 << 30;
/// Present while the image has grown but its filesystem not yet.
const GROW_PENDING: &str = "grow-pending";
/// How often a pending growth is tried again when the volume is measured.
const RETRY_GROWTH_EVERY: std::time::Duration = std::time::Duration::from_secs(3);
/// Present when the volume is encrypted, holding its key's identifier (not the key).
const ENCRYPTED: &str = "encrypted";
/// The directory of an encrypted volume that machines see.
const DATA: &str = "data";

pub struct LoopBackend {
    dir: PathBuf,
    /// How many times the host disk's free space volumes may be promised (their images
    /// are sparse, so they take only what is written).
    overcommit: f64,
    encryption: fscrypt::Encryption,
    /// Encrypted volumes' keys, as the control plane gave them.
    keys: Mutex<HashMap<String, VolumeKey>>,
    /// One lock per volume, held while it is mounted, unmounted or removed, so two
    /// calls never mount (or grow) the same image at once.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Where snapshots are kept.
    snapshots: Arc<dyn SnapshotStore>,
    /// One lock per volume, held while its snapshots are taken or removed.
    snapshot_turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl LoopBackend {
    pub fn new(
        dir: PathBuf,
        overcommit: f64,
        encryption: fscrypt::Encryption,
        snapshots: Arc<dyn SnapshotStore>,
    ) -> LoopBackend {
        LoopBackend {
            dir,
            overcommit,
            encryption,
            keys: Mutex::default(),
            turns: Mutex::default(),
            snapshots,
            snapshot_turns: Mutex::default(),
        }
    }

    fn turn(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        turns.entry(id.to_string()).or_default().clone()
    }

    fn key_of(&self, id: &str) -> Option<VolumeKey> {
        self.keys.lock().ok()?.get(id).cloned()
    }

    fn remember(&self, id: &str, key: Option<&VolumeKey>) {
        if let Ok(mut keys) = self.keys.lock() {
            match key {
                Some(k) => keys.insert(id.to_string(), k.clone()),
                None => keys.remove(id),
            };
        }
    }

    /// Mounts the volume and, when its key is known, gives the key to the filesystem.
    async fn mount(&self, id: &str) -> Result<PathBuf, VolumeError> {
        let turn = self.turn(id);
        let _held = turn.lock().await;
        let fs = self.mount_raw(id).await?;
        if let Some(key) = self.key_of(id) {
            fscrypt::add_key(&fs, &key)?;
        }
        Ok(fs)
    }

    /// Encrypts a new volume's data directory with `key` (a restored one's is already).
    fn encrypt(
        &self,
        id: &str,
        fs: &Path,
        key: &VolumeKey,
        fresh: bool,
    ) -> Result<(), VolumeError> {
        self.remember(id, Some(key));
        let identifier = fscrypt::add_key(fs, key)?;
        if fresh {
            let data = fs.join(DATA);
            std::fs::create_dir(&data)
                .map_err(|e| failed("make the volume's data directory", &e))?;
            fscrypt::set_policy(&data, &identifier)?;
        }
        std::fs::write(
            self.volume_dir(id)?.join(ENCRYPTED),
            fscrypt::hex(&identifier),
        )
        .map_err(|e| failed("note the volume's encryption", &e))
    }

    /// Grows `image` (attached as `device`) to `size_gb` and tells the loop device;
    /// refuses to shrink it or to take more than the host's disk has room for.
    async fn grow_image(
        &self,
        image: &Path,
        device: &str,
        size_gb: u32,
    ) -> Result<(), VolumeError> {
        let size = u64::from(size_gb) * GB;
        let now = std::fs::metadata(image)
            .map_err(|e| failed("read the image", &e))?
            .len();
        if size < now {
            return Err(VolumeError::Invalid(format!(
                "a volume can only grow: it is {} GB, asked {size_gb} GB",
                now / GB
            )));
        }
        room_for(&self.dir, size - now, size_gb, self.overcommit)?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(image)
            .and_then(|f| f.set_len(size))
            .map_err(|e| failed("grow the image", &e))?;
        run("losetup", &["-c".as_ref(), device.as_ref()]).await?;
        Ok(())
    }

    fn volume_dir(&self, id: &str) -> Result<PathBuf, VolumeError> {
        let ok = !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(self.dir.join(id))
        } else {
            Err(VolumeError::Invalid(format!("invalid volume id {id:?}")))
        }
    }

    async fn mounted(&self, id: &str) -> Result<Option<PathBuf>, VolumeError> {
        let dir = self.volume_dir(id)?;
        if !dir.join("disk.img").exists() {
            return Err(VolumeError::NotFound(id.to_string()));
        }
        let fs = dir.join("fs");
        Ok(is_mount_point(&fs).then_some(fs))
    }

    async fn mount_raw(&self, id: &str) -> Result<PathBuf, VolumeError> {
        let dir = self.volume_dir(id)?;
        let grow = dir.join(GROW_PENDING);
        if let Some(fs) = self.mounted(id).await? {
            if !grow.exists() {
                return Ok(fs);
            }
            // A growth the mounted filesystem could not take: now, between two runs of
            // its machine, nothing holds it, so it grows unmounted.
            if let Err(e) = run("umount", &[fs.as_os_str()]).await {
                tracing::warn!(volume = %id, error = %e, "volume still in use; it grows at a later start");
                return Ok(fs);
            }
        }
        let (image, fs) = (dir.join("disk.img"), dir.join("fs"));
        std::fs::create_dir_all(&fs).map_err(|e| failed("make the mount point", &e))?;
        guard_mount_point(&fs).await;
        if let Ok(device) = loop_device(&image).await {
            // Let go of the device; the kernel keeps it while anything holds it.
            let _ = run("losetup", &["-d".as_ref(), device.as_ref()]).await;
        }
        if let Ok(device) = loop_device(&image).await {
            // Still attached: a machine's mount namespace holds the filesystem. It must
            // not be checked or grown now; the same device (so the same filesystem) is
            // mounted here again.
            match mount_device(&device, &fs).await {
                Ok(()) => return Ok(fs),
                // Or the device is still being let go (the kernel detaches it a moment
                // after the last holder): once it is gone the image is attached afresh.
                Err(e) if !detached_soon(&image).await => return Err(e),
                Err(_) => {}
            }
        }
        if grow.exists() {
            run("e2fsck", &["-f".as_ref(), "-p".as_ref(), image.as_os_str()]).await?;
            run("resize2fs", &[image.as_os_str()]).await?;
            let _ = std::fs::remove_file(&grow);
            tracing::info!(volume = %id, "volume's filesystem grown");
        }
        // Direct I/O to the image: the blocks are cached once, by the filesystem.
        let device = run(
            "losetup",
            &[
                "--find".as_ref(),
                "--show".as_ref(),
                "--direct-io=on".as_ref(),
                image.as_os_str(),
            ],
        )
        .await?;
        if let Err(e) = mount_device(device.trim(), &fs).await {
            let _ = run("losetup", &["-d".as_ref(), device.trim().as_ref()]).await;
            return Err(e);
        }
        Ok(fs)
    }
}

#[async_trait::async_trait]
impl VolumeBackend for LoopBackend {
    async fn create(&self, spec: &VolumeSpec) -> Result<(VolumeStat, bool), VolumeError> {
        root_needed()?;
        let raw = match spec.fstype.as_str() {
            "ext4" => false,
            "raw" => true,
            other => {
                return Err(VolumeError::Invalid(format!(
                    "fstype {other:?} is not supported: use ext4 or raw"
                )))
            }
        };
        let dir = self.volume_dir(&spec.id)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| failed("make the volumes directory", &e))?;
        let size = u64::from(spec.size_gb) * GB;
        room_for(&self.dir, size, spec.size_gb, self.overcommit)?;
        // A restore or fork of an encrypted source must have its key, whatever the
        // setting: its blocks are encrypted already.
        let inherited = spec.source.is_some() && spec.key.is_some();
        let key = spec
            .key
            .as_ref()
            .filter(|_| (inherited && fscrypt::supported()) || self.encryption.applies())
            .filter(|_| !raw);
        if raw && spec.key.is_some() {
            tracing::warn!(volume = %spec.id, "raw volume not encrypted: this host encrypts filesystems (ext4), not block devices");
        } else if spec.key.is_some() && key.is_none() {
            tracing::warn!(volume = %spec.id, setting = ?self.encryption, "volume not encrypted: this host's kernel cannot encrypt ext4, or has no AES in hardware (see --volume-encryption)");
        }
        let made = async {
            std::fs::create_dir(&dir).map_err(|e| failed("make the volume's directory", &e))?;
            let image = dir.join("disk.img");
            if raw {
                std::fs::write(dir.join(raw::RAW), b"")
                    .map_err(|e| failed("note the volume's type", &e))?;
            }
            match (&spec.source, raw) {
                (None, false) => format(&image, size).await?,
                (None, true) => std::fs::File::create(&image)
                    .and_then(|f| f.set_len(size))
                    .map_err(|e| failed("make the image", &e))?,
                (Some(source), _) => self.fill_from(source, &image, size, !raw).await?,
            }
            if raw {
                return Ok((self.raw_stat(&spec.id).await?, false));
            }
            let fs = self.mount(&spec.id).await?;
            if let Some(key) = key {
                self.encrypt(&spec.id, &fs, key, spec.source.is_none())?;
            }
            Ok((statvfs(&fs)?, key.is_some()))
        }
        .await;
        if made.is_err() {
            let _ = self.destroy(&spec.id).await;
        }
        made
    }

    async fn extend(&self, id: &str, size_gb: u32) -> Result<VolumeStat, VolumeError> {
        root_needed()?;
        if self.is_raw(id)? {
            return self.raw_extend(id, size_gb).await;
        }
        let fs = self.mount(id).await?;
        let image = self.volume_dir(id)?.join("disk.img");
        let device = loop_device(&image).await?;
        self.grow_image(&image, &device, size_gb).await?;
        if let Err(e) = run("resize2fs", &[device.as_ref()]).await {
            // Growing a mounted ext4 takes CAP_SYS_RESOURCE; without it the filesystem
            // grows at its machine's next start (the caller sees needs_restart).
            tracing::warn!(volume = %id, error = %e, "volume cannot grow while mounted; it grows at the next start");
            std::fs::write(self.volume_dir(id)?.join(GROW_PENDING), b"")
                .map_err(|e| failed("note the growth", &e))?;
            // Unmounted, it grows now if nothing else holds it.
            return statvfs(&self.mount(id).await?);
        }
        statvfs(&fs)
    }

    async fn mount_point(&self, id: &str) -> Result<PathBuf, VolumeError> {
        root_needed()?;
        if self.is_raw(id)? {
            return self.attach(id).await;
        }
        let fs = self.mount(id).await?;
        if !self.volume_dir(id)?.join(ENCRYPTED).exists() {
            return Ok(fs);
        }
        if self.key_of(id).is_none() {
            return Err(VolumeError::Failed(format!(
                "volume {id} is encrypted and this host does not have its key yet: the control plane gives it when this agent registers, so start the machine again once it has"
            )));
        }
        Ok(fs.join(DATA))
    }

    async fn unlock(&self, id: &str, key: &VolumeKey) -> Result<(), VolumeError> {
        self.remember(id, Some(key));
        if let Some(fs) = self.mounted(id).await? {
            fscrypt::add_key(&fs, key)?;
        }
        Ok(())
    }

    async fn stat(&self, id: &str) -> Result<VolumeStat, VolumeError> {
        if self.is_raw(id)? {
            return self.raw_stat(id).await;
        }
        // A growth that waited for its writers is tried again (at most every few
        // seconds), so the space comes once the filesystem is let go, without a restart.
        let grow = self.volume_dir(id)?.join(GROW_PENDING);
        let due = std::fs::metadata(&grow)
            .and_then(|m| m.modified())
            .is_ok_and(|at| at.elapsed().is_ok_and(|age| age >= RETRY_GROWTH_EVERY));
        if due {
            let _ = std::fs::write(&grow, b"");
            return statvfs(&self.mount(id).await?);
        }
        match self.mounted(id).await? {
            Some(fs) => statvfs(&fs),
            None => statvfs(&self.mount(id).await?),
        }
    }

    async fn destroy(&self, id: &str) -> Result<(), VolumeError> {
        let dir = self.volume_dir(id)?;
        let turn = self.turn(id);
        let _held = turn.lock().await;
        self.remember(id, None);
        if !dir.exists() {
            return Ok(());
        }
        let fs = dir.join("fs");
        if is_mount_point(&fs) {
            run("umount", &[fs.as_os_str()]).await.map_err(|e| {
                VolumeError::Failed(format!("volume {id} is still in use on this host: {e}"))
            })?;
        }
        if let Ok(device) = loop_device(&dir.join("disk.img")).await {
            let _ = run("losetup", &["-d".as_ref(), device.as_ref()]).await;
        }
        let _ = run("chattr", &["-i".as_ref(), fs.as_os_str()]).await;
        std::fs::remove_dir_all(&dir).map_err(|e| failed("remove the volume", &e))
    }

    async fn snapshot(&self, id: &str, snapshot_id: &str) -> Result<SnapshotMade, VolumeError> {
        root_needed()?;
        self.take_snapshot(id, snapshot_id).await
    }

    async fn delete_snapshot(&self, volume_id: &str, snapshot_id: &str) -> Result<(), VolumeError> {
        self.remove_snapshot(volume_id, snapshot_id).await
    }

    async fn mount_all(&self) -> Vec<(String, VolumeError)> {
        let mut failures = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return failures;
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if entry.path().join("disk.img").exists() {
                let attached = if entry.path().join(raw::RAW).exists() {
                    self.attach(&id).await.map(|_| ())
                } else {
                    self.mount(&id).await.map(|_| ())
                };
                if let Err(e) = attached {
                    failures.push((id, e));
                }
            }
        }
        failures
    }
}

/// Whether `image`'s loop device goes away within a couple of seconds.
async fn detached_soon(image: &Path) -> bool {
    for _ in 0..40 {
        if loop_device(image).await.is_err() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}
