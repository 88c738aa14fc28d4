//! Volumes on the wire: the Volumes API's request and response bodies and a machine
//! config's `mounts[]` entry, in Fly's field names. No I/O; sizes are GB as Fly counts
//! them (GiB).

use serde::{Deserialize, Serialize};

use crate::machine_config::MachineGuest;

/// The largest volume, in GB.
pub const MAX_VOLUME_GB: u32 = 500;
/// A volume's size when a create through the API names none.
pub const API_DEFAULT_VOLUME_GB: u32 = 3;
/// How many days snapshots are kept when the create names no retention.
pub const DEFAULT_SNAPSHOT_RETENTION: u32 = 5;

/// A machine config's `mounts[]` entry: the volume mounted at `path`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineMount {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub volume: String,
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extend_threshold_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_size_gb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gb_limit: Option<u32>,
}

/// A volume as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub id: String,
    pub name: String,
    pub state: String,
    pub size_gb: u32,
    pub region: String,
    pub zone: String,
    pub encrypted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_machine_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_alloc_id: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks_free: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks_avail: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_used: Option<u64>,
    pub fstype: String,
    pub snapshot_retention: u32,
    pub auto_backup_enabled: bool,
    pub host_status: String,
}

/// `POST /apps/{app}/volumes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateVolumeRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub size_gb: Option<i64>,
    #[serde(default)]
    pub encrypted: Option<bool>,
    #[serde(default)]
    pub fstype: Option<String>,
    #[serde(default)]
    pub require_unique_zone: Option<bool>,
    #[serde(default)]
    pub unique_zone_app_wide: Option<bool>,
    #[serde(default)]
    pub snapshot_retention: Option<i64>,
    #[serde(default)]
    pub auto_backup_enabled: Option<bool>,
    #[serde(default)]
    pub snapshot_id: Option<String>,
    #[serde(default)]
    pub source_volume_id: Option<String>,
    #[serde(default)]
    pub compute: Option<MachineGuest>,
    #[serde(default)]
    pub compute_image: Option<String>,
    #[serde(default)]
    pub machines_only: Option<bool>,
}

/// `PUT /apps/{app}/volumes/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateVolumeRequest {
    #[serde(default)]
    pub snapshot_retention: Option<i64>,
    #[serde(default)]
    pub auto_backup_enabled: Option<bool>,
}

/// `PUT /apps/{app}/volumes/{id}/extend`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtendVolumeRequest {
    #[serde(default)]
    pub size_gb: Option<i64>,
}

/// The answer to an extend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtendVolumeResponse {
    pub volume: Volume,
    pub needs_restart: bool,
}

/// A volume snapshot as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeSnapshot {
    pub id: String,
    /// Bytes stored.
    pub size: u64,
    /// The volume's size when taken, in bytes.
    pub volume_size: u64,
    pub digest: String,
    pub created_at: String,
    pub status: String,
    pub retention_days: u32,
    #[serde(rename = "type")]
    pub kind: String,
}

/// Checks a volume name as Fly does: lowercase letters, digits and underscores, at most
/// 30 characters. The message says what is allowed.
pub fn check_volume_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 30
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid volume name {name:?}: use up to 30 lowercase letters, digits and underscores"
        ))
    }
}

/// Checks a size in GB for a new or extended volume.
pub fn check_volume_size(size_gb: i64) -> Result<u32, String> {
    if (1..=i64::from(MAX_VOLUME_GB)).contains(&size_gb) {
        Ok(size_gb as u32)
    } else {
        Err(format!(
            "invalid volume size {size_gb} GB: a volume is 1 to {MAX_VOLUME_GB} GB"
        ))
    }
}

/// Checks a snapshot retention in days.
pub fn check_snapshot_retention(days: i64) -> Result<u32, String> {
    if (1..=60).contains(&days) {
        Ok(days as u32)
    } else {
        Err(format!(
            "invalid snapshot_retention {days}: keep snapshots 1 to 60 days"
        ))
    }
}

/// Checks a config's mounts as Fly does: at most one, at an absolute path that is not
/// `/`. (The volume's id is checked where it is attached: a deploy's config names its
/// volume by name until one is found for it.)
pub fn check_mounts(mounts: &[MachineMount]) -> Result<(), String> {
    if mounts.len() > 1 {
        return Err(format!(
            "config.mounts: a machine mounts at most one volume, got {}",
            mounts.len()
        ));
    }
    for m in mounts {
        let path = m.path.trim_end_matches('/');
        if !m.path.starts_with('/') || path.is_empty() || path.split('/').any(|c| c == "..") {
            return Err(format!(
                "config.mounts: path must be an absolute path other than /, such as /data; got {:?}",
                m.path
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_fly_allows() {
        assert!(check_volume_name("data").is_ok());
        assert!(check_volume_name("pg_data2").is_ok());
        for bad in ["", "Data", "my-data", "a b", &"a".repeat(31)] {
            assert!(check_volume_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_and_retention_in_range() {
        assert_eq!(check_volume_size(10), Ok(10));
        assert!(check_volume_size(0).is_err());
        assert!(check_volume_size(501).unwrap_err().contains("1 to 500 GB"));
        assert_eq!(check_snapshot_retention(60), Ok(60));
        assert!(check_snapshot_retention(0).is_err());
    }

    #[test]
    fn mounts_one_volume_never_at_root() {
        let m = |volume: &str, path: &str| MachineMount {
            volume: volume.into(),
            path: path.into(),
            ..Default::default()
        };
        assert!(check_mounts(&[m("vol_1", "/data")]).is_ok());
        assert!(check_mounts(&[m("vol_1", "/")])
            .unwrap_err()
            .contains("other than /"));
        assert!(check_mounts(&[m("vol_1", "data")]).is_err());
        assert!(check_mounts(&[m("vol_1", "/a/../b")]).is_err());
        assert!(check_mounts(&[m("vol_1", "/a"), m("vol_2", "/b")])
            .unwrap_err()
            .contains("at most one"));
    }

    #[test]
    fn a_mount_reads_fly_fields() {
        let m: MachineMount = serde_json::from_value(serde_json::json!({
            "volume": "vol_1", "path": "/data", "extend_threshold_percent": 80,
            "add_size_gb": 1, "size_gb_limit": 5
        }))
        .unwrap();
        assert_eq!((m.volume.as_str(), m.path.as_str()), ("vol_1", "/data"));
        assert_eq!(m.size_gb_limit, Some(5));
    }
}
