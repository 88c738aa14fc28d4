//! The control plane's periodic care of volumes: growing a machine's volume when its use
//! passes the mount's `extend_threshold_percent` (by `add_size_gb`, never past
//! `size_gb_limit`), and the daily snapshot schedule with its expiry
//! (`snapshots::scheduled_pass`). Growing itself is `volumes::extend`; measuring is the
//! agent's.

use std::time::Duration;

use hangar_store::VolumeRecord;
use hangar_types::volume::MachineMount;

use super::{extend, snapshots, stat, VolumeFailure};
use crate::{clock, AppState};

/// How much a volume grows past its threshold when the mount names no `add_size_gb`.
const DEFAULT_ADD_SIZE_GB: u32 = 1;

/// The size a volume should grow to, if it should: `used` of `total` bytes passed the
/// mount's threshold and the limit leaves room. Pure, for the unit tests.
pub fn auto_extend_target(
    mount: &MachineMount,
    size_gb: u32,
    used: u64,
    total: u64,
) -> Option<u32> {
    let threshold = mount
        .extend_threshold_percent
        .filter(|t| (1..=100).contains(t))?;
    if total == 0 || used.saturating_mul(100) < total.saturating_mul(u64::from(threshold)) {
        return None;
    }
    let limit = mount
        .size_gb_limit
        .unwrap_or(hangar_types::volume::MAX_VOLUME_GB);
    let add = mount
        .add_size_gb
        .filter(|a| *a > 0)
        .unwrap_or(DEFAULT_ADD_SIZE_GB);
    let target = size_gb.saturating_add(add).min(limit);
    (target > size_gb).then_some(target)
}

/// Grows one volume if its machine's mount asks for it; returns the new size.
async fn auto_extend(state: &AppState, v: VolumeRecord) -> Result<Option<u32>, VolumeFailure> {
    // What a raw volume holds is the machine's business: it has no use to measure.
    let Some(machine_id) = v.attached_machine_id.clone().filter(|_| v.fstype != "raw") else {
        return Ok(None);
    };
    let Some(machine) = state
        .store
        .call(move |db| db.machine_by_id(&machine_id))
        .await?
    else {
        return Ok(None);
    };
    let Some(mount) = machine
        .config
        .mounts
        .iter()
        .flatten()
        .find(|m| m.volume == v.id)
        .cloned()
    else {
        return Ok(None);
    };
    if mount.extend_threshold_percent.is_none() {
        return Ok(None);
    }
    let Some(measured) = stat(state, &v).await else {
        return Ok(None);
    };
    let size_gb = u32::try_from(v.size_gb).unwrap_or(u32::MAX);
    let Some(target) = auto_extend_target(
        &mount,
        size_gb,
        measured.bytes_used(),
        measured.bytes_total(),
    ) else {
        return Ok(None);
    };
    let (id, machine) = (v.id.clone(), machine.id.clone());
    extend(state, v, target).await?;
    let event = hangar_types::MachineEvent {
        id: crate::ids::ulid(),
        kind: hangar_types::EventKind::VolumeExtend,
        status: "extended".into(),
        source: "flyd".into(),
        timestamp: clock::now_ms(),
        request: Some(serde_json::json!({
            "volume": id,
            "from_size_gb": size_gb,
            "to_size_gb": target,
            "used_percent": measured.bytes_used() * 100 / measured.bytes_total().max(1),
            "extend_threshold_percent": mount.extend_threshold_percent,
        })),
    };
    let m = machine.clone();
    state
        .store
        .call(move |db| db.record_event(&m, &event))
        .await?;
    tracing::info!(
        volume = %id,
        machine = %machine,
        from_gb = size_gb,
        to_gb = target,
        threshold_percent = mount.extend_threshold_percent,
        "volume auto-extended: its use passed the mount's threshold"
    );
    Ok(Some(target))
}

/// One pass over every live volume: auto-extend where asked. Returns how many grew.
pub async fn auto_extend_pass(state: &AppState) -> Result<usize, VolumeFailure> {
    let volumes = state.store.call(|db| db.live_volumes()).await?;
    let mut grown = 0;
    for v in volumes {
        let id = v.id.clone();
        match auto_extend(state, v).await {
            Ok(Some(_)) => grown += 1,
            Ok(None) => {}
            Err(e) => tracing::warn!(volume = %id, error = %e, "volume could not be auto-extended"),
        }
    }
    Ok(grown)
}

/// Runs both every `every` until the process ends.
pub async fn run(state: AppState, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = auto_extend_pass(&state).await {
            tracing::warn!(error = %e, "volume auto-extend pass failed");
        }
        if let Err(e) = snapshots::scheduled_pass(&state, clock::now_ms()).await {
            tracing::warn!(error = %e, "snapshot schedule pass failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(threshold: Option<u32>, add: Option<u32>, limit: Option<u32>) -> MachineMount {
        MachineMount {
            extend_threshold_percent: threshold,
            add_size_gb: add,
            size_gb_limit: limit,
            ..Default::default()
        }
    }

    #[test]
    fn grows_past_the_threshold_by_the_step_up_to_the_limit() {
        let gb = 1u64 << 30;
        assert_eq!(
            auto_extend_target(&mount(Some(80), Some(2), Some(10)), 1, gb * 81 / 100, gb),
            Some(3)
        );
        assert_eq!(
            auto_extend_target(&mount(Some(80), Some(2), Some(10)), 1, gb * 79 / 100, gb),
            None,
            "below"
        );
        assert_eq!(
            auto_extend_target(&mount(Some(80), Some(5), Some(3)), 2, gb, gb),
            Some(3),
            "clamped"
        );
        assert_eq!(
            auto_extend_target(&mount(Some(80), Some(5), Some(3)), 3, gb, gb),
            None,
            "at the limit"
        );
        assert_eq!(
            auto_extend_target(&mount(Some(80), None, None), 1, gb, gb),
            Some(2),
            "1 GB by default"
        );
        assert_eq!(
            auto_extend_target(&mount(None, Some(2), None), 1, gb, gb),
            None,
            "not asked"
        );
        assert_eq!(
            auto_extend_target(&mount(Some(0), Some(2), None), 1, gb, gb),
            None,
            "0 is off"
        );
    }
}
