//! Raw volumes (`fstype: raw`): the sparse image attached to a loop device and given to
//! the machine as that block device, with no filesystem made or mounted by Hangar (the
//! machine formats it as it likes). Growing one grows the image and tells the loop
//! device; what is used inside it Hangar cannot see, so a raw volume reports its size
//! and no free blocks, and is neither encrypted nor auto-extended. Its snapshots cannot
//! be frozen, so the control plane takes them only while no machine runs on it.

use std::path::PathBuf;

use super::host::{failed, loop_device, run};
use super::LoopBackend;
use crate::volumes::{VolumeError, VolumeStat};

/// Present in a raw volume's directory.
pub(super) const RAW: &str = "raw";
/// The block size a raw volume is counted in.
const BLOCK_SIZE: u64 = 4096;

impl LoopBackend {
    pub(super) fn is_raw(&self, id: &str) -> Result<bool, VolumeError> {
        Ok(self.volume_dir(id)?.join(RAW).exists())
    }

    /// The loop device of raw volume `id`, attaching its image if it is not.
    pub(super) async fn attach(&self, id: &str) -> Result<PathBuf, VolumeError> {
        let turn = self.turn(id);
        let _held = turn.lock().await;
        let image = self.volume_dir(id)?.join("disk.img");
        if !image.exists() {
            return Err(VolumeError::NotFound(id.to_string()));
        }
        if let Ok(device) = loop_device(&image).await {
            return Ok(PathBuf::from(device));
        }
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
        Ok(PathBuf::from(device.trim()))
    }

    /// A raw volume's size as blocks (none known free).
    pub(super) async fn raw_stat(&self, id: &str) -> Result<VolumeStat, VolumeError> {
        self.attach(id).await?;
        let image = self.volume_dir(id)?.join("disk.img");
        let size = std::fs::metadata(&image)
            .map_err(|e| failed("read the image", &e))?
            .len();
        Ok(VolumeStat {
            block_size: BLOCK_SIZE,
            blocks: size / BLOCK_SIZE,
            blocks_free: 0,
            blocks_avail: 0,
        })
    }

    /// Grows a raw volume's image and its loop device, online.
    pub(super) async fn raw_extend(
        &self,
        id: &str,
        size_gb: u32,
    ) -> Result<VolumeStat, VolumeError> {
        let device = self.attach(id).await?;
        let image = self.volume_dir(id)?.join("disk.img");
        self.grow_image(&image, &device.to_string_lossy(), size_gb)
            .await?;
        self.raw_stat(id).await
    }
}
