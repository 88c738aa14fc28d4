//! This host's volumes: the blocks behind each one, through a [`VolumeBackend`] (by
//! default [`loopback::LoopBackend`]: a sparse image file with an ext4 filesystem,
//! attached through a loop device and mounted under the data dir), and the host path a
//! machine's mount of it is bound to. What volumes exist, their names and which machine
//! holds one are the control plane's; this module keeps only the blocks and answers for
//! them by id. Snapshots (`snapshot/`) are kept in a directory under the data dir or
//! in an S3-compatible bucket.

pub mod fscrypt;
pub mod loopback;
pub mod snapshot;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use fscrypt::VolumeKey;

/// How a host keeps its volumes, as the operator set it.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeSettings {
    /// How many times the disk's free space volumes may be promised (sparse images).
    pub overcommit: f64,
    pub encryption: fscrypt::Encryption,
    /// The S3-compatible bucket snapshots go to; `None` keeps them under the data dir.
    pub snapshot_bucket: Option<snapshot::s3::S3Config>,
}

impl Default for VolumeSettings {
    fn default() -> Self {
        VolumeSettings {
            overcommit: 1.0,
            encryption: fscrypt::Encryption::Auto,
            snapshot_bucket: None,
        }
    }
}

/// A volume to make on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub id: String,
    pub size_gb: u32,
    /// `ext4`.
    pub fstype: String,
    /// What the new volume starts with: nothing (an empty filesystem), a snapshot's
    /// blocks, or a copy of a live volume's (a fork).
    #[serde(default)]
    pub source: Option<VolumeSource>,
    /// The key to encrypt it with, where the host can (a restore or fork gets its
    /// source's key, with which its blocks are already encrypted).
    #[serde(default)]
    pub key: Option<VolumeKey>,
}

/// Where a new volume's blocks come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeSource {
    /// Snapshot `id`, taken of volume `volume_id`.
    Snapshot {
        id: String,
        volume_id: String,
    },
    Volume(String),
}

/// What the agent answers a [`VolumeOp`]: the volume's filesystem as it is now, and the
/// snapshot taken, for a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeReply {
    pub stat: VolumeStat,
    #[serde(default)]
    pub snapshot: Option<snapshot::SnapshotMade>,
    /// For a create: whether the new volume is encrypted at rest.
    #[serde(default)]
    pub encrypted: bool,
}

/// A volume's filesystem as measured now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeStat {
    pub block_size: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_avail: u64,
}

impl VolumeStat {
    pub fn bytes_total(&self) -> u64 {
        self.blocks * self.block_size
    }

    pub fn bytes_used(&self) -> u64 {
        self.blocks.saturating_sub(self.blocks_free) * self.block_size
    }
}

/// Why a volume operation failed. Messages say what to do and never name a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum VolumeError {
    /// The host cannot hold what was asked (disk space, no loop device, not root).
    #[error("{0}")]
    Capacity(String),
    #[error("volume {0} is not on this host")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

/// What the control plane asks of a host's volumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeOp {
    Create(VolumeSpec),
    Extend {
        id: String,
        size_gb: u32,
    },
    Stat {
        id: String,
    },
    /// Answers a zero [`VolumeStat`].
    Destroy {
        id: String,
    },
    /// Takes a consistent snapshot of the volume as `snapshot_id`.
    Snapshot {
        id: String,
        snapshot_id: String,
    },
    DeleteSnapshot {
        /// The volume it was taken of (its chunks are kept under it).
        #[serde(default)]
        volume_id: String,
        snapshot_id: String,
    },
    /// Gives the host an encrypted volume's key (after the agent started, when the
    /// kernel no longer has it).
    Unlock {
        id: String,
        key: VolumeKey,
    },
}

/// Where volumes' blocks live: made, grown, measured, mounted and removed by id.
#[async_trait::async_trait]
pub trait VolumeBackend: Send + Sync {
    /// Makes the volume's blocks and filesystem, encrypted with `spec.key` where the host
    /// can (the answer says whether it is); on failure nothing of it is left.
    async fn create(&self, spec: &VolumeSpec) -> Result<(VolumeStat, bool), VolumeError>;
    /// Keeps an encrypted volume's key for as long as this process runs and gives it
    /// to the mounted filesystem.
    async fn unlock(&self, id: &str, key: &VolumeKey) -> Result<(), VolumeError>;
    /// Grows the volume to `size_gb`, online (a mounted filesystem grows in place).
    async fn extend(&self, id: &str, size_gb: u32) -> Result<VolumeStat, VolumeError>;
    /// The mounted filesystem's path on this host, mounting it first if it is not.
    async fn mount_point(&self, id: &str) -> Result<PathBuf, VolumeError>;
    async fn stat(&self, id: &str) -> Result<VolumeStat, VolumeError>;
    /// Unmounts and removes the volume's blocks; a volume already gone is not an error.
    async fn destroy(&self, id: &str) -> Result<(), VolumeError>;
    /// Takes a consistent (frozen) snapshot of the volume's blocks.
    async fn snapshot(
        &self,
        id: &str,
        snapshot_id: &str,
    ) -> Result<snapshot::SnapshotMade, VolumeError>;
    /// Removes a snapshot of `volume_id`, and the blocks no other snapshot needs; one
    /// already gone is not an error.
    async fn delete_snapshot(&self, volume_id: &str, snapshot_id: &str) -> Result<(), VolumeError>;
    /// Mounts every volume this host holds (after a reboot or a crash).
    async fn mount_all(&self) -> Vec<(String, VolumeError)>;
}

/// This host's volumes. Cheap to clone.
#[derive(Clone)]
pub struct Volumes(pub Arc<dyn VolumeBackend>);

impl Volumes {
    /// Volumes as loop-mounted image files under `dir`, as `settings` say; their
    /// snapshots under `dir`'s sibling `snapshots` unless a bucket is configured.
    pub fn loopback(dir: PathBuf, settings: &VolumeSettings) -> Result<Volumes, VolumeError> {
        let snapshots: Arc<dyn snapshot::store::SnapshotStore> = match &settings.snapshot_bucket {
            Some(bucket) => {
                Arc::new(snapshot::s3::S3Store::new(bucket.clone()).map_err(VolumeError::Invalid)?)
            }
            None => Arc::new(snapshot::store::DirStore::new(
                dir.with_file_name("snapshots"),
            )),
        };
        Ok(Volumes(Arc::new(loopback::LoopBackend::new(
            dir,
            settings.overcommit,
            settings.encryption,
            snapshots,
        ))))
    }

    /// Mounts every volume this host holds, before machines start again; one that
    /// cannot be mounted is logged (its machine's start will say why).
    pub async fn mount_all(&self) {
        for (id, e) in self.0.mount_all().await {
            tracing::error!(volume = %id, error = %e, "volume cannot be mounted");
        }
    }

    /// Does what the control plane asked.
    pub async fn apply(&self, op: &VolumeOp) -> Result<VolumeReply, VolumeError> {
        let b = self.backend();
        let stat = |stat| VolumeReply {
            stat,
            ..VolumeReply::default()
        };
        match op {
            VolumeOp::Create(spec) => b.create(spec).await.map(|(stat, encrypted)| VolumeReply {
                stat,
                encrypted,
                snapshot: None,
            }),
            VolumeOp::Unlock { id, key } => {
                b.unlock(id, key).await?;
                b.stat(id).await.map(stat)
            }
            VolumeOp::Extend { id, size_gb } => b.extend(id, *size_gb).await.map(stat),
            VolumeOp::Stat { id } => b.stat(id).await.map(stat),
            VolumeOp::Destroy { id } => b.destroy(id).await.map(|()| VolumeReply::default()),
            VolumeOp::Snapshot { id, snapshot_id } => {
                let made = b.snapshot(id, snapshot_id).await?;
                Ok(VolumeReply {
                    stat: b.stat(id).await?,
                    snapshot: Some(made),
                    encrypted: false,
                })
            }
            VolumeOp::DeleteSnapshot {
                volume_id,
                snapshot_id,
            } => b
                .delete_snapshot(volume_id, snapshot_id)
                .await
                .map(|()| VolumeReply::default()),
        }
    }

    pub fn backend(&self) -> &dyn VolumeBackend {
        self.0.as_ref()
    }
}
