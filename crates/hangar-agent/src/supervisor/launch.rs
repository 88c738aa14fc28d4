//! What a machine is launched with: the driver's [`LaunchSpec`], including Fly's runtime
//! variables (machines-api.md §13.4), `PORT` and the app's secrets (fetched by the
//! caller from the control plane).

use std::collections::BTreeMap;

use hangar_runtime::{LaunchSpec, Secrets, VolumeMount};
use hangar_store::MachineRecord;

pub fn spec(
    m: &MachineRecord,
    server_region: &str,
    secrets: Secrets,
    volumes: Vec<VolumeMount>,
) -> LaunchSpec {
    let c = &m.config;
    let user_env = c.env.clone().unwrap_or_default();
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set("FLY_APP_NAME", m.app_name.clone());
    set("FLY_MACHINE_ID", m.id.clone());
    set("FLY_ALLOC_ID", m.id.clone());
    set("FLY_REGION", m.region.clone());
    set("FLY_IMAGE_REF", c.image.clone());
    set("FLY_MACHINE_VERSION", m.instance_id.clone());
    set("FLY_PROCESS_GROUP", c.process_group().to_string());
    set("FLY_PRIVATE_IP", m.private_ip.clone());
    set("FLY_VM_MEMORY_MB", c.memory_mb().to_string());
    let primary = user_env
        .get("PRIMARY_REGION")
        .cloned()
        .unwrap_or_else(|| server_region.to_string());
    set("PRIMARY_REGION", primary);
    if !user_env.contains_key("PORT") {
        let port = c
            .services
            .as_ref()
            .and_then(|s| s.first())
            .map(|s| s.internal_port)
            .filter(|p| *p != 0)
            .unwrap_or(8080);
        set("PORT", port.to_string());
    }
    LaunchSpec {
        machine_id: m.id.clone(),
        app_name: m.app_name.clone(),
        private_ip: m.private_ip.clone(),
        config: c.clone(),
        platform_env: env,
        secrets,
        volumes,
    }
}

/// Where each of the config's volumes is mounted on this host, mounting it if it is
/// not; the message names the volume that cannot be.
pub async fn volume_mounts(
    volumes: &crate::volumes::Volumes,
    config: &hangar_types::MachineConfig,
) -> Result<Vec<VolumeMount>, String> {
    let mut mounts = Vec::new();
    for m in config.mounts.as_deref().unwrap_or_default() {
        let source = volumes
            .backend()
            .mount_point(&m.volume)
            .await
            .map_err(|e| format!("cannot mount volume {} at {}: {e}", m.volume, m.path))?;
        let block_device = block_device(&source);
        mounts.push(VolumeMount {
            source,
            path: m.path.clone(),
            block_device,
        });
    }
    Ok(mounts)
}

/// The numbers of the block device at `path` (a raw volume's loop device), if it is one.
fn block_device(path: &std::path::Path) -> Option<hangar_runtime::BlockDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path).ok()?;
    meta.file_type()
        .is_block_device()
        .then(|| hangar_runtime::BlockDevice {
            major: nix::sys::stat::major(meta.rdev()),
            minor: nix::sys::stat::minor(meta.rdev()),
        })
}
