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
//! (loop devices and `mount`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::process::Command;

use super::fscrypt::{self, VolumeKey};
use super::snapshot::{self, SnapshotMade};
use super::{VolumeBackend, VolumeError, VolumeSource, VolumeSpec, VolumeStat};

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
    turns: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl LoopBackend {
    pub fn new(dir: PathBuf, overcommit: f64, encryption: fscrypt::Encryption) -> LoopBackend {
        LoopBackend {
            dir,
            overcommit,
            encryption,
            keys: Mutex::default(),
            turns: Mutex::default(),
        }
    }

    fn turn(&self, id: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
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
            mount_device(&device, &fs).await?;
            return Ok(fs);
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
        if spec.fstype != "ext4" {
            return Err(VolumeError::Invalid(format!(
                "fstype {:?} is not supported on this host: use ext4",
                spec.fstype
            )));
        }
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
            .filter(|_| (inherited && fscrypt::supported()) || self.encryption.applies());
        if spec.key.is_some() && key.is_none() {
            tracing::warn!(volume = %spec.id, setting = ?self.encryption, "volume not encrypted: this host's kernel cannot encrypt ext4, or has no AES in hardware (see --volume-encryption)");
        }
        let made = async {
            std::fs::create_dir(&dir).map_err(|e| failed("make the volume's directory", &e))?;
            let image = dir.join("disk.img");
            match &spec.source {
                None => format(&image, size).await?,
                Some(source) => self.fill_from(source, &image, size).await?,
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
        let fs = self.mount(id).await?;
        let image = self.volume_dir(id)?.join("disk.img");
        let size = u64::from(size_gb) * GB;
        let now = std::fs::metadata(&image)
            .map_err(|e| failed("read the image", &e))?
            .len();
        if size < now {
            return Err(VolumeError::Invalid(format!(
                "a volume can only grow: it is {} GB, asked {size_gb} GB",
                now / GB
            )));
        }
        room_for(&self.dir, size - now, size_gb, self.overcommit)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .map_err(|e| failed("open the image", &e))?;
        file.set_len(size)
            .map_err(|e| failed("grow the image", &e))?;
        drop(file);
        let device = loop_device(&image).await?;
        run("losetup", &["-c".as_ref(), device.as_ref()]).await?;
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
        let out = self.snapshot_file(snapshot_id)?;
        std::fs::create_dir_all(self.snapshots_dir())
            .map_err(|e| failed("make the snapshots directory", &e))?;
        self.frozen_copy(id, out).await
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), VolumeError> {
        match std::fs::remove_file(self.snapshot_file(snapshot_id)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(failed("remove the snapshot", &e)),
        }
    }

    async fn mount_all(&self) -> Vec<(String, VolumeError)> {
        let mut failures = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return failures;
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if entry.path().join("disk.img").exists() {
                if let Err(e) = self.mount(&id).await {
                    failures.push((id, e));
                }
            }
        }
        failures
    }
}

impl LoopBackend {
    fn snapshots_dir(&self) -> PathBuf {
        self.dir.with_file_name("snapshots")
    }

    fn snapshot_file(&self, snapshot_id: &str) -> Result<PathBuf, VolumeError> {
        let ok = !snapshot_id.is_empty()
            && snapshot_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ok {
            Ok(self.snapshots_dir().join(format!("{snapshot_id}.zst")))
        } else {
            Err(VolumeError::Invalid(format!(
                "invalid snapshot id {snapshot_id:?}"
            )))
        }
    }

    /// Copies volume `id`'s blocks to `out` while its filesystem is frozen, so the copy
    /// is what the filesystem holds at one moment; it thaws whatever happens.
    async fn frozen_copy(&self, id: &str, out: PathBuf) -> Result<SnapshotMade, VolumeError> {
        let fs = self.mount(id).await?;
        let image = self.volume_dir(id)?.join("disk.img");
        // Blocks of deleted files go back to the image as holes first, so the snapshot
        // holds only what the filesystem still uses.
        if let Err(e) = run("fstrim", &[fs.as_os_str()]).await {
            tracing::debug!(volume = %id, error = %e, "volume not trimmed before its snapshot");
        }
        run("fsfreeze", &["-f".as_ref(), fs.as_os_str()]).await?;
        let copied = tokio::task::spawn_blocking(move || snapshot::take(&image, &out))
            .await
            .map_err(|e| VolumeError::Failed(format!("snapshot task failed: {e}")));
        let thawed = run("fsfreeze", &["-u".as_ref(), fs.as_os_str()]).await;
        let made = copied??;
        thawed?;
        Ok(made)
    }

    /// Fills a new image from a snapshot, or from a live volume (a fork), then grows
    /// its filesystem to `size` if that is larger.
    async fn fill_from(
        &self,
        source: &VolumeSource,
        image: &Path,
        size: u64,
    ) -> Result<(), VolumeError> {
        let (file, temporary) = match source {
            VolumeSource::Snapshot(s) => {
                let file = self.snapshot_file(s)?;
                if !file.exists() {
                    return Err(VolumeError::NotFound(format!("snapshot {s}")));
                }
                (file, false)
            }
            VolumeSource::Volume(v) => {
                let file = image.with_file_name("fork.zst");
                self.frozen_copy(v, file.clone()).await?;
                (file, true)
            }
        };
        let (from, to) = (file.clone(), image.to_path_buf());
        let restored = tokio::task::spawn_blocking(move || snapshot::restore(&from, &to, size))
            .await
            .map_err(|e| VolumeError::Failed(format!("restore task failed: {e}")))?;
        if temporary {
            let _ = std::fs::remove_file(&file);
        }
        if restored? < size {
            run("e2fsck", &["-f".as_ref(), "-p".as_ref(), image.as_os_str()]).await?;
            run("resize2fs", &[image.as_os_str()]).await?;
        }
        Ok(())
    }
}

/// A new sparse image of `size` with an empty ext4 filesystem.
async fn format(image: &Path, size: u64) -> Result<(), VolumeError> {
    let file = std::fs::File::create(image).map_err(|e| failed("make the image", &e))?;
    file.set_len(size)
        .map_err(|e| failed("size the image", &e))?;
    drop(file);
    run(
        "mkfs.ext4",
        &[
            "-q".as_ref(),
            "-F".as_ref(),
            "-E".as_ref(),
            "nodiscard,lazy_itable_init=1,lazy_journal_init=1".as_ref(),
            // Native encryption is possible on every volume (only an encrypted one's
            // data directory uses it).
            "-O".as_ref(),
            "encrypt".as_ref(),
            image.as_os_str(),
        ],
    )
    .await
    .map(|_| ())
}

fn root_needed() -> Result<(), VolumeError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(VolumeError::Capacity(
            "volumes need root on this host (loop devices and mount): run hangar as root".into(),
        ))
    }
}

fn failed(what: &str, e: &std::io::Error) -> VolumeError {
    VolumeError::Failed(format!("cannot {what}: {e}"))
}

/// Refuses a volume the host's disk has no room for, saying how much there is.
fn room_for(dir: &Path, bytes: u64, size_gb: u32, overcommit: f64) -> Result<(), VolumeError> {
    let s = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| failed("measure the host's disk", &e.into()))?;
    let free = s.blocks_available() as u64 * s.fragment_size() as u64;
    if (free as f64 * overcommit) < bytes as f64 {
        return Err(VolumeError::Capacity(format!(
            "the host's disk has {:.1} GB free under {}, too little for {size_gb} GB: free space there or ask for less",
            free as f64 / GB as f64,
            dir.display()
        )));
    }
    Ok(())
}

/// Makes the (unmounted) mount point immutable, so a machine writing while its
/// filesystem is briefly unmounted (to grow it) gets an error rather than files hidden
/// under the filesystem once it is back.
async fn guard_mount_point(fs: &Path) {
    if is_mount_point(fs) {
        return;
    }
    if let Err(e) = run("chattr", &["+i".as_ref(), fs.as_os_str()]).await {
        tracing::debug!(mount_point = %fs.display(), error = %e, "mount point left writable");
    }
}

fn statvfs(fs: &Path) -> Result<VolumeStat, VolumeError> {
    let s = nix::sys::statvfs::statvfs(fs).map_err(|e| failed("measure the volume", &e.into()))?;
    Ok(VolumeStat {
        block_size: s.fragment_size() as u64,
        blocks: s.blocks() as u64,
        blocks_free: s.blocks_free() as u64,
        blocks_avail: s.blocks_available() as u64,
    })
}

/// True when `path` is where a filesystem is mounted (its device differs from its
/// parent's).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(here), Some(Ok(parent))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    here.dev() != parent.dev()
}

async fn mount_device(device: &str, fs: &Path) -> Result<(), VolumeError> {
    run(
        "mount",
        &[
            "-t".as_ref(),
            "ext4".as_ref(),
            "-o".as_ref(),
            "noatime".as_ref(),
            device.as_ref(),
            fs.as_os_str(),
        ],
    )
    .await
    .map(|_| ())
}

/// The loop device an image is attached to.
async fn loop_device(image: &Path) -> Result<String, VolumeError> {
    let out = run(
        "losetup",
        &[
            "-n".as_ref(),
            "-O".as_ref(),
            "NAME".as_ref(),
            "-j".as_ref(),
            image.as_os_str(),
        ],
    )
    .await?;
    out.lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .ok_or_else(|| {
            VolumeError::Failed(format!(
                "{} is not attached to a loop device",
                image.display()
            ))
        })
}

/// Where host tools are looked for after `PATH`: system tools live in sbin, which a
/// service's `PATH` often lacks.
const SYSTEM_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The host tool `program`, from `PATH` or the system directories.
fn tool(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

/// Runs a host tool; its stderr is the error.
async fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<String, VolumeError> {
    let out = Command::new(tool(program))
        .args(args)
        .env_remove("HANGAR_MASTER_KEY")
        .output()
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => VolumeError::Capacity(format!(
                "{program} is not installed on this host (apt-get install e2fsprogs mount)"
            )),
            _ => failed(&format!("run {program}"), &e),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(VolumeError::Failed(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
