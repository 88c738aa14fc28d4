//! The host tools and system calls the loop backend is made of: making an ext4 image,
//! loop devices and mounts, disk room and filesystem measures, and running a host tool
//! (found on `PATH` or in the system directories) with its stderr as the error. No
//! volume bookkeeping lives here; that is `mod.rs`'s.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::GB;
use crate::volumes::{VolumeError, VolumeStat};

/// A new sparse image of `size` with an empty ext4 filesystem.
pub(super) async fn format(image: &Path, size: u64) -> Result<(), VolumeError> {
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

pub(super) fn root_needed() -> Result<(), VolumeError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(VolumeError::Capacity(
            "volumes need root on this host (loop devices and mount): run hangar as root".into(),
        ))
    }
}

pub(super) fn failed(what: &str, e: &std::io::Error) -> VolumeError {
    VolumeError::Failed(format!("cannot {what}: {e}"))
}

/// Refuses a volume the host's disk has no room for, saying how much there is.
pub(super) fn room_for(
    dir: &Path,
    bytes: u64,
    size_gb: u32,
    overcommit: f64,
) -> Result<(), VolumeError> {
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
pub(super) async fn guard_mount_point(fs: &Path) {
    if is_mount_point(fs) {
        return;
    }
    if let Err(e) = run("chattr", &["+i".as_ref(), fs.as_os_str()]).await {
        tracing::debug!(mount_point = %fs.display(), error = %e, "mount point left writable");
    }
}

pub(super) fn statvfs(fs: &Path) -> Result<VolumeStat, VolumeError> {
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
pub(super) fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(here), Some(Ok(parent))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    here.dev() != parent.dev()
}

pub(super) async fn mount_device(device: &str, fs: &Path) -> Result<(), VolumeError> {
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
pub(super) async fn loop_device(image: &Path) -> Result<String, VolumeError> {
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
pub(super) const SYSTEM_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The host tool `program`, from `PATH` or the system directories.
pub(super) fn tool(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

/// Runs a host tool; its stderr is the error.
pub(super) async fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<String, VolumeError> {
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
