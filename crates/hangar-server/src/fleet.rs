//! Machines as the API and the deployer change them: checking a config, creating a
//! machine (record, launch event, optional lease, actor), and waiting for a state or for
//! passing health checks.
//!
//! Everything here goes through the store and the machine actors; nothing changes a
//! machine's state directly. Deciding which machines to change is the deployer's job.

use std::time::Duration;

use hangar_store::{AppRecord, LeaseRecord, MachineRecord, StoreError};
use hangar_types::{MachineConfig, MachineEvent, MachineState};

use crate::{clock, ids, AppState};
use hangar_agent::api::OpError;

/// Why a machine could not be checked, prepared or created. The API answers each as
/// Fly does (`api/errors.rs`); the deployer reports its message.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The config cannot run as given: the user must change it.
    #[error("{0}")]
    Invalid(String),
    /// Another live machine of the app has the name.
    #[error("a machine named {name:?} already exists in app {app:?}; pick another name")]
    NameTaken { name: String, app: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The volume asked for is another machine's.
    #[error("{0}")]
    VolumeTaken(String),
    /// No host has room for the machine.
    #[error(transparent)]
    Placement(#[from] crate::placement::PlacementError),
    /// The host's agent could not answer.
    #[error(transparent)]
    Agent(OpError),
    #[error("{0}")]
    Internal(String),
}

/// The host a machine must run on because its volume is there, once the volume is
/// found to be the app's, live, free and in the machine's region.
async fn volume_host(state: &AppState, m: &MachineRecord) -> Result<Option<String>, FleetError> {
    let Some(mount) = m.config.mounts.as_deref().and_then(|m| m.first()) else {
        return Ok(None);
    };
    if mount.volume.is_empty() {
        return Err(FleetError::Invalid(
            "config.mounts: volume is required: give the id of a volume (vol_...) of this app"
                .into(),
        ));
    }
    let (app, id) = (m.app_name.clone(), mount.volume.clone());
    let v = state.store.call(move |db| db.volume(&app, &id)).await?;
    let Some(v) = v.filter(|v| v.deleted_at_ms.is_none()) else {
        return Err(FleetError::Invalid(format!(
            "volume not found: {} is not a volume of app {}; create one with `hangar volumes create`",
            mount.volume, m.app_name
        )));
    };
    if v.region != m.region {
        return Err(FleetError::Invalid(format!(
            "volume {} is in region {}, the machine in {}: create the machine in {} or use a volume in {}",
            v.id, v.region, m.region, v.region, m.region
        )));
    }
    if let Some(other) = v.attached_machine_id.filter(|o| *o != m.id) {
        return Err(FleetError::VolumeTaken(format!(
            "volume {} is attached to machine {other}; use another volume or destroy that machine",
            v.id
        )));
    }
    Ok(Some(v.host))
}

/// How many made-up names a create tries before it gives up.
const NAME_ATTEMPTS: u32 = 5;

/// A machine to create.
pub struct NewMachine {
    pub config: MachineConfig,
    pub region: String,
    /// The name asked for; without one a name is made up (and made up again should
    /// another live machine of the app have it).
    pub name: Option<String>,
    pub skip_launch: bool,
    /// Created cordoned: the proxy sends it nothing until uncordoned.
    pub cordoned: bool,
    /// A lease to take at creation: owner and TTL in seconds.
    pub lease: Option<(String, u64)>,
}

/// Checks a config as the API does, naming the problem.
pub async fn check_config(state: &AppState, config: &MachineConfig) -> Result<(), FleetError> {
    config
        .validate()
        .map_err(|e| FleetError::Invalid(e.to_string()))?;
    match state.agent.api().check_config(config).await {
        Ok(()) => Ok(()),
        Err(OpError::Invalid(m)) => Err(FleetError::Invalid(m)),
        Err(e) => Err(FleetError::Agent(e)),
    }
}

/// Lets the driver fetch what the config needs (its image) before anything is stored.
pub async fn prepare(state: &AppState, config: &MachineConfig) -> Result<(), FleetError> {
    match state.agent.api().prepare(config).await {
        Ok(()) => Ok(()),
        Err(OpError::Invalid(m)) => Err(FleetError::Invalid(m)),
        Err(e) => Err(FleetError::Agent(e)),
    }
}

/// Stores a new machine with its launch event (and lease) and hands it to its actor,
/// which starts it unless `skip_launch`. The config must have been checked and prepared.
pub async fn create(
    state: &AppState,
    app: &AppRecord,
    new: NewMachine,
) -> Result<(MachineRecord, MachineEvent, Option<LeaseRecord>), FleetError> {
    let id = ids::machine_id();
    let now = clock::rfc3339_now();
    let made_up_name = new.name.is_none();
    let mut record = MachineRecord {
        id: id.clone(),
        app_name: app.name.clone(),
        name: new.name.unwrap_or_else(ids::machine_name),
        region: new.region,
        state: MachineState::Created,
        instance_id: ids::ulid(),
        private_ip: ids::private_ip(app.org_numeric_id, &id),
        config: new.config,
        cordoned: new.cordoned,
        created_at: now.clone(),
        updated_at: now,
        runtime: None,
    };
    let launch = MachineEvent {
        id: ids::ulid(),
        kind: hangar_types::EventKind::Launch,
        status: "created".into(),
        source: "user".into(),
        timestamp: clock::now_ms(),
        request: None,
    };
    let lease = new.lease.map(|(owner, ttl)| LeaseRecord {
        machine_id: id.clone(),
        nonce: ids::lease_nonce(),
        owner,
        description: String::new(),
        expires_at: clock::now_secs() + ttl as i64,
    });
    // Chosen and recorded under one turn, so two creates cannot share the last room.
    let turn = state.placement.turn().await;
    let held_mb = state.store.call(|db| db.reserved_memory_mb()).await?;
    let want_mb = u64::from(record.config.memory_mb());
    let host = match volume_host(state, &record).await? {
        Some(host) => state.placement.choose_host(&host, want_mb, held_mb)?,
        None => state.placement.choose(&record.region, want_mb, held_mb)?,
    };
    let mut attempt = 1;
    loop {
        let (r, ev, l) = (record.clone(), launch.clone(), lease.clone());
        let inserted = state
            .store
            .call(move |db| {
                db.insert_machine(&r, &ev)?;
                if let Some(l) = &l {
                    db.put_lease(l)?;
                }
                Ok(())
            })
            .await;
        match inserted {
            Ok(()) => break,
            Err(e) if e.is_unique_violation() && made_up_name && attempt < NAME_ATTEMPTS => {
                attempt += 1;
                record.name = ids::machine_name();
            }
            Err(e) if e.is_unique_violation() => {
                return Err(FleetError::NameTaken {
                    name: record.name,
                    app: record.app_name,
                })
            }
            Err(e) => return Err(e.into()),
        }
    }
    drop(turn);
    tracing::info!(app = %record.app_name, machine = %record.id, host = %host.id, "machine created");
    state
        .agent
        .api()
        .create(record.clone(), new.skip_launch)
        .await
        .map_err(|e| FleetError::Internal(format!("hand the machine to the agent: {e}")))?;
    Ok((record, launch, lease))
}

/// Waits until the machine is in one of `targets`; the state it reached, or a message
/// saying which state it was stuck in.
pub async fn wait_state(
    state: &AppState,
    machine_id: &str,
    targets: &[MachineState],
    timeout: Duration,
) -> Result<MachineState, String> {
    let Some(mut rx) = state.agent.api().watch(machine_id).await else {
        return Err(format!("machine {machine_id} is gone"));
    };
    let wait = async {
        loop {
            let current = rx.borrow_and_update().state;
            if targets.contains(&current) {
                return Ok(current);
            }
            if current == MachineState::Destroyed {
                return Err(format!("machine {machine_id} was destroyed"));
            }
            if rx.changed().await.is_err() {
                return Err(format!("machine {machine_id} is gone"));
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r,
        Err(_) => {
            let current = state
                .agent
                .state(machine_id)
                .await
                .map(|s| s.to_string())
                .unwrap_or_else(|| "gone".into());
            let want: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
            Err(format!(
                "timeout reached waiting for machine {machine_id} to be {} (it is {current}); raise --wait-timeout if it needs longer to start",
                want.join(" or ")
            ))
        }
    }
}

/// How many health checks a config declares (top-level and per service).
pub fn configured_checks(config: &MachineConfig) -> usize {
    config.checks.as_ref().map_or(0, |c| c.len())
        + config
            .services
            .iter()
            .flatten()
            .map(|s| s.checks.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
}

/// Waits until every configured check of the machine passes; a message naming the
/// failing checks and their output if they do not within `timeout`.
pub async fn wait_checks(
    state: &AppState,
    machine_id: &str,
    config: &MachineConfig,
    timeout: Duration,
) -> Result<(), String> {
    let want = configured_checks(config);
    if want == 0 {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let results = state.agent.check_results(machine_id).await;
        if results.len() >= want
            && results
                .iter()
                .all(|c| c.status == hangar_types::CheckState::Passing)
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let failing: Vec<String> = results
                .iter()
                .filter(|c| c.status != hangar_types::CheckState::Passing)
                .map(|c| format!("{} is {}: {}", c.name, c.status, c.output.trim()))
                .collect();
            let detail = if failing.is_empty() {
                "no check has reported yet".to_string()
            } else {
                failing.join("; ")
            };
            return Err(format!(
                "timeout reached waiting for health checks to pass for machine {machine_id}: {detail}"
            ));
        }
        // Results are in memory: polling often costs nothing and adds no delay.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The machine's last `n` log lines, oldest first.
pub async fn last_log_lines(state: &AppState, machine_id: &str, n: usize) -> Vec<String> {
    let lines = match state.agent.api().logs(machine_id, None).await {
        Ok(read) => read.lines,
        Err(e) => {
            tracing::warn!(machine = %machine_id, error = %e, "the machine's log is unavailable");
            Vec::new()
        }
    };
    let skip = lines.len().saturating_sub(n);
    lines.into_iter().skip(skip).map(|l| l.message).collect()
}
