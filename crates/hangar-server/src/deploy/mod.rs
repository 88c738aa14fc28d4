//! The deployer: turns an app config and an image into a release and the app's
//! machines into that release, on the server, so a client that goes away never leaves
//! half a deploy (flytoml-and-deploys.md §7).
//!
//! [`start`] checks everything that can be checked before anything changes (config,
//! conversion per group, the image, strategy preconditions), records the release and
//! runs the deploy in the background ([`run`]); the machine-by-machine strategies are in
//! [`strategy`], the release command in [`release_command`], progress in [`progress`].
//! The API that takes deploy requests and streams progress is `api::deploys`.

mod leases;
mod machine_checks;
pub mod progress;
mod recover;
mod release_command;
mod run;
mod strategy;

use std::time::Duration;

use hangar_appconfig::AppConfig;
use hangar_runtime::Secrets;
use hangar_store::{AppRecord, ReleaseRecord};
use hangar_types::MachineConfig;

use crate::{clock, fleet, ids, AppState};

pub use progress::{Registry, Reporter};
pub use recover::{mark_interrupted, undo_all};

/// Why a deploy could not start. Once started, a deploy reports failures through its
/// release and progress instead.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The plan cannot be deployed as given: the user must change the config or image.
    #[error("{0}")]
    Invalid(String),
    /// Another deploy of the app is under way.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] hangar_store::StoreError),
    #[error(transparent)]
    Vault(#[from] crate::secrets::VaultError),
    #[error("{0}")]
    Internal(String),
}

/// How machines move to the new release: the one word for it, from `hangar-types`.
pub use hangar_types::DeployStrategy as Strategy;

/// Everything a deploy needs, decided before it starts.
#[derive(Debug, Clone)]
pub struct Plan {
    pub app: AppRecord,
    pub config: AppConfig,
    pub image: String,
    pub strategy: Strategy,
    /// ≥ 1: machines at once; below 1: a fraction of a group's started machines.
    pub max_unavailable: f64,
    pub wait_timeout: Duration,
    pub release_command_timeout: Duration,
    /// A second machine for new groups with services.
    pub ha: bool,
    pub skip_release_command: bool,
    /// Keep every machine's config; only move it to the new release (new secrets).
    pub restart_only: bool,
    /// The secrets the release carries when not the app's current ones (a rollback);
    /// they become the app's secrets when the deploy completes.
    pub secrets: Option<Secrets>,
    pub description: String,
}

/// The default per-machine wait, as flyctl's.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// The machine config for a group on this plan's image (no release metadata yet).
pub(crate) fn group_config(
    plan: &Plan,
    group: &str,
    existing: Option<&MachineConfig>,
) -> Result<MachineConfig, String> {
    let mut mc = plan
        .config
        .to_machine_config(group, existing)
        .map_err(|e| e.to_string())?;
    mc.image = plan.image.clone();
    Ok(mc)
}

/// Checks the plan, records its release and starts the deploy in the background.
/// Nothing about the app's machines has changed when this returns an error.
pub async fn start(
    state: &AppState,
    plan: Plan,
    user: String,
) -> Result<ReleaseRecord, DeployError> {
    let app = plan.app.name.clone();
    let machines = {
        let a = app.clone();
        state
            .store
            .call(move |db| db.live_machines_of_app(&a))
            .await?
    };
    let managed: Vec<_> = machines.iter().filter(|m| run::is_managed(m)).collect();
    if plan.restart_only && managed.is_empty() {
        return Err(DeployError::Invalid(format!(
            "no machines available to deploy: app {app} has no deployed machines; the secrets are staged for its first deploy"
        )));
    }
    let mut configs = Vec::new();
    for g in plan.config.groups() {
        let mc = group_config(&plan, &g, None)
            .map_err(|e| DeployError::Invalid(format!("process group '{g}': {e}")))?;
        fleet::check_config(state, &mc)
            .await
            .map_err(|e| DeployError::Invalid(format!("process group '{g}': {e}")))?;
        configs.push(mc);
    }
    if plan.strategy == Strategy::Bluegreen
        && !configs.iter().any(|mc| fleet::configured_checks(mc) > 0)
    {
        return Err(DeployError::Invalid(
            "You need to define at least 1 check in order to use blue-green deployments: add [[http_service.checks]] or [checks.<name>] to fly.toml".into(),
        ));
    }
    // Every group runs the same image: pulling it once checks it for all.
    if let Some(mc) = configs.first() {
        fleet::prepare(state, mc).await.map_err(|e| {
            DeployError::Invalid(format!("image {} cannot be used: {e}", plan.image))
        })?;
    }
    let placeholder = ids::ulid();
    let reporter = state.deploys.claim(&app, &placeholder).map_err(|running| {
        DeployError::Busy(format!(
            "a deploy of app {app} is already under way (release {running}); wait for it to finish"
        ))
    })?;
    let created = create_release(state, &plan, user).await;
    let release = match created {
        Ok(r) => r,
        Err(e) => {
            state.deploys.release(&app);
            return Err(e);
        }
    };
    state.deploys.rename(&app, &placeholder, &release.id);
    let (st, rel) = (state.clone(), release.clone());
    tokio::spawn(async move {
        run::run(st.clone(), plan, rel, reporter).await;
        st.deploys.release(&app);
    });
    Ok(release)
}

async fn create_release(
    state: &AppState,
    plan: &Plan,
    user: String,
) -> Result<ReleaseRecord, DeployError> {
    let (secrets_version, sealed) = match &plan.secrets {
        None => state.vault.snapshot(&plan.app.name).await?,
        Some(set) => {
            let (_, version) = state.vault.list(&plan.app.name).await?;
            (version, state.vault.seal_snapshot(&plan.app.name, set)?)
        }
    };
    let now = clock::rfc3339_now();
    let definition =
        serde_json::to_string(&plan.config).map_err(|e| DeployError::Internal(e.to_string()))?;
    let record = ReleaseRecord {
        id: ids::ulid(),
        app_name: plan.app.name.clone(),
        version: 0,
        image: plan.image.clone(),
        definition,
        secrets_version,
        secrets: sealed,
        strategy: plan.strategy,
        status: hangar_types::deploy::ReleaseStatus::Running,
        description: plan.description.clone(),
        user,
        error: None,
        created_at: now.clone(),
        updated_at: now,
    };
    Ok(state
        .store
        .call(move |db| db.create_release(record))
        .await?)
}
