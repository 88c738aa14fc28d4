//! One deploy from start to end: the release command, machines for new groups, the
//! strategy over existing machines, removing groups that left the config — and, when
//! any of it fails, putting every machine it changed back on the previous release and
//! marking the release failed, with the failing machine's last log lines.

use std::collections::BTreeMap;
use std::sync::Mutex;

use hangar_appconfig::machine::metadata;
use hangar_store::{MachineRecord, ReleaseRecord};
use hangar_types::deploy::ReleaseStatus;
use hangar_types::{MachineConfig, MachineState};

use super::{release_command, strategy, Plan, Reporter, Strategy};
use crate::{clock, fleet, AppState};

/// Whether a deploy manages the machine: made by a deploy, and not a release command.
pub(crate) fn is_managed(m: &MachineRecord) -> bool {
    let md = m.config.metadata.as_ref();
    md.and_then(|md| md.get(metadata::PLATFORM_VERSION))
        .is_some_and(|v| v == "v2")
        && m.config.process_group() != metadata::RELEASE_COMMAND_GROUP
}

const SETTLED: &[MachineState] = &MachineState::RESTING;

/// Why a deploy failed, and the machine it failed on.
#[derive(Debug)]
pub(super) struct Failure {
    pub message: String,
    pub machine: Option<String>,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            machine: None,
        }
    }

    pub fn on(machine: &str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            machine: Some(machine.into()),
        }
    }
}

/// What the deploy changed so far, to undo if it fails.
#[derive(Default)]
pub(super) struct Undo {
    /// Machines updated in place: id, group, config before, whether it was started.
    pub updated: Mutex<Vec<(String, String, MachineConfig, bool)>>,
    /// Machines this deploy created.
    pub created: Mutex<Vec<String>>,
    /// Machines this deploy holds leases on.
    pub leased: Mutex<Vec<String>>,
}

/// What every step of a deploy shares.
pub(super) struct Ctx<'a> {
    pub state: &'a AppState,
    pub plan: &'a Plan,
    pub release: &'a ReleaseRecord,
    pub reporter: &'a Reporter,
    pub undo: &'a Undo,
}

impl Ctx<'_> {
    /// The release's metadata on a machine config.
    pub fn stamp(&self, mut mc: MachineConfig) -> MachineConfig {
        let md = mc.metadata.get_or_insert_with(Default::default);
        md.insert(metadata::RELEASE_ID.into(), self.release.id.clone());
        md.insert(
            metadata::RELEASE_VERSION.into(),
            self.release.version.to_string(),
        );
        mc
    }

    /// Where new machines go: `primary_region`, else this host's region.
    pub fn region(&self) -> String {
        self.plan
            .config
            .primary_region
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| self.state.region.to_string())
    }
}

pub(super) async fn run(state: AppState, plan: Plan, release: ReleaseRecord, reporter: Reporter) {
    let undo = Undo::default();
    let ctx = Ctx {
        state: &state,
        plan: &plan,
        release: &release,
        reporter: &reporter,
        undo: &undo,
    };
    let result = execute(&ctx).await;
    let (status, error) = match result {
        Ok(()) => {
            if let Some(set) = &plan.secrets {
                if let Err(e) = state.vault.restore(&plan.app.name, set).await {
                    reporter.warning(format!("the app's secrets were not restored: {e}"));
                }
            }
            reporter.finish(true, done_message(&ctx));
            (ReleaseStatus::Complete, None)
        }
        Err(f) => {
            reporter.step(format!("deploy failed: {}", f.message));
            if let Some(id) = &f.machine {
                let lines = fleet::last_log_lines(&state, id, 20).await;
                if !lines.is_empty() {
                    reporter.step(format!("last log lines of machine {id}:"));
                }
                for l in lines {
                    reporter.log(id, l);
                }
            }
            roll_back(&ctx).await;
            reporter.finish(false, format!("v{} failed: {}", release.version, f.message));
            (ReleaseStatus::Failed, Some(f.message))
        }
    };
    // Held through any rollback; released whatever the outcome.
    super::leases::release(&ctx).await;
    let (id, now) = (release.id.clone(), clock::rfc3339_now());
    let r = state
        .store
        .call(move |db| db.set_release_status(&id, status, error.as_deref(), &now))
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, release = %release.id, "record release status");
    }
}

async fn execute(ctx: &Ctx<'_>) -> Result<(), Failure> {
    let (plan, reporter) = (ctx.plan, ctx.reporter);
    let all = settled_machines(ctx).await?;
    for m in all
        .iter()
        .filter(|m| m.config.process_group() == metadata::RELEASE_COMMAND_GROUP)
    {
        destroy(ctx, &m.id).await;
    }
    let Sorted { by_group, removed } = sort_machines(ctx, all);
    let mut to_lease: Vec<String> = by_group.values().flatten().map(|m| m.id.clone()).collect();
    to_lease.extend(removed.iter().map(|m| m.id.clone()));
    super::leases::take(ctx, to_lease).await?;
    let missing = missing_groups(plan, &by_group);
    announce(ctx, &removed);
    if !plan.restart_only && !plan.skip_release_command {
        release_command::run(ctx).await?;
    }
    let first_deploy = by_group.is_empty();
    if plan.strategy == Strategy::Canary && !first_deploy && !plan.restart_only {
        strategy::canary(ctx, by_group.keys().cloned().collect()).await?;
    }
    for g in &missing {
        strategy::create_group(ctx, g).await?;
    }
    let entries = entries(ctx, by_group)?;
    if !entries.is_empty() {
        match plan.strategy {
            Strategy::Immediate => strategy::immediate(ctx, entries).await?,
            Strategy::Bluegreen => strategy::bluegreen(ctx, entries).await?,
            Strategy::Rolling | Strategy::Canary => strategy::rolling(ctx, entries).await?,
        }
    }
    for m in &removed {
        destroy(ctx, &m.id).await;
        reporter.machine(
            &m.id,
            m.config.process_group(),
            "destroyed (its group left the config)",
        );
    }
    Ok(())
}

async fn live_machines(ctx: &Ctx<'_>) -> Result<Vec<MachineRecord>, Failure> {
    let app = ctx.plan.app.name.clone();
    ctx.state
        .store
        .call(move |db| db.live_machines_of_app(&app))
        .await
        .map_err(|e| Failure::new(format!("list machines: {e}")))
}

/// The app's live machines, once none is mid-change. A machine mid-change (an
/// immediate deploy does not wait, a user may be starting one) is waited for: what the
/// deploy does to each depends on the state it rests in.
async fn settled_machines(ctx: &Ctx<'_>) -> Result<Vec<MachineRecord>, Failure> {
    let all = live_machines(ctx).await?;
    let moving: Vec<String> = all
        .iter()
        .filter(|m| !SETTLED.contains(&m.state))
        .map(|m| m.id.clone())
        .collect();
    if moving.is_empty() {
        return Ok(all);
    }
    for id in &moving {
        wait_settled(ctx, id).await?;
    }
    live_machines(ctx).await
}

/// Waits for a machine to come to rest; one destroyed meanwhile is no failure.
async fn wait_settled(ctx: &Ctx<'_>, id: &str) -> Result<(), Failure> {
    let state = ctx.state;
    if let Err(e) = fleet::wait_state(state, id, SETTLED, ctx.plan.wait_timeout).await {
        let gone = state
            .agent
            .state(id)
            .await
            .is_none_or(|s| s == MachineState::Destroyed);
        if !gone {
            return Err(Failure::on(
                id,
                format!("machine {id} did not settle before the deploy: {e}"),
            ));
        }
    }
    Ok(())
}

/// The machines a deploy moves to the release, by group, and those it destroys.
struct Sorted {
    by_group: BTreeMap<String, Vec<MachineRecord>>,
    /// Machines whose process group is no longer in the config.
    removed: Vec<MachineRecord>,
}

/// Sorts the app's machines for the deploy; those a deploy did not make are left as
/// they are, with a warning.
fn sort_machines(ctx: &Ctx<'_>, all: Vec<MachineRecord>) -> Sorted {
    let plan = ctx.plan;
    let (managed, unmanaged): (Vec<MachineRecord>, Vec<MachineRecord>) =
        all.into_iter().partition(is_managed);
    let others = unmanaged
        .iter()
        .filter(|m| m.config.process_group() != metadata::RELEASE_COMMAND_GROUP)
        .count();
    if others > 0 {
        let app = &plan.app.name;
        ctx.reporter.warning(format!(
            "{others} machine(s) of {app} were not made by a deploy (hangar machine run, the Machines API); the deploy leaves them as they are"
        ));
    }
    let groups = plan.config.groups();
    let mut by_group: BTreeMap<String, Vec<MachineRecord>> = BTreeMap::new();
    let mut removed = Vec::new();
    for m in managed {
        let g = m.config.process_group().to_string();
        if plan.restart_only || groups.contains(&g) {
            by_group.entry(g).or_default().push(m);
        } else {
            removed.push(m);
        }
    }
    Sorted { by_group, removed }
}

/// The config's groups that have no machine yet (none on a restart).
fn missing_groups(plan: &Plan, by_group: &BTreeMap<String, Vec<MachineRecord>>) -> Vec<String> {
    if plan.restart_only {
        return Vec::new();
    }
    plan.config
        .groups()
        .iter()
        .filter(|g| !by_group.contains_key(*g))
        .cloned()
        .collect()
}

/// Says what the release is, and which machines it will destroy.
fn announce(ctx: &Ctx<'_>, removed: &[MachineRecord]) {
    let (plan, reporter) = (ctx.plan, ctx.reporter);
    reporter.step(format!(
        "release v{}: {} strategy, image {}",
        ctx.release.version,
        plan.strategy.as_str(),
        plan.image
    ));
    for m in removed {
        reporter.step(format!(
            "process group '{}' is no longer in the config: machine {} will be destroyed",
            m.config.process_group(),
            m.id
        ));
    }
}

/// Each existing machine with the config it moves to, stamped with the release: on a
/// restart its own, otherwise its group's on the new image.
fn entries(
    ctx: &Ctx<'_>,
    by_group: BTreeMap<String, Vec<MachineRecord>>,
) -> Result<Vec<strategy::Entry>, Failure> {
    let plan = ctx.plan;
    let mut entries = Vec::new();
    for (g, machines) in by_group {
        for m in machines {
            let config = if plan.restart_only {
                m.config.clone()
            } else {
                super::group_config(plan, &g, Some(&m.config))
                    .map_err(|e| Failure::on(&m.id, format!("machine {}: {e}", m.id)))?
            };
            entries.push(strategy::Entry {
                config: ctx.stamp(config),
                group: g.clone(),
                machine: m,
            });
        }
    }
    Ok(entries)
}

/// Destroys a machine, stopping it first (its requests finish); failures are reported.
pub(super) async fn destroy(ctx: &Ctx<'_>, id: &str) {
    let r = ctx.state.agent.destroy(id, true).await;
    if let Err(e) = r {
        ctx.reporter
            .warning(format!("machine {id} was not destroyed: {e}; destroy it with `hangar machine destroy {id} --force`"));
    }
}

/// Puts updated machines back on their previous config (and so the previous release's
/// image and secrets) and removes the machines this deploy created.
async fn roll_back(ctx: &Ctx<'_>) {
    let updated = ctx
        .undo
        .updated
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    let created = ctx
        .undo
        .created
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    if updated.is_empty() && created.is_empty() {
        ctx.reporter
            .step("no machine was changed; the app stays on its current release");
        return;
    }
    ctx.reporter.step(format!(
        "rolling back: {} machine(s) return to the previous release, {} new machine(s) are removed",
        updated.len(),
        created.len()
    ));
    let restores = updated.into_iter().map(|(id, group, config, was_started)| async move {
        // A machine mid-update takes no new config until it settles.
        let _ = fleet::wait_state(ctx.state, &id, SETTLED, ctx.plan.wait_timeout).await;
        let restored = ctx
            .state
            .agent.update(&id, config, !was_started)
            .await;
        match restored {
            Err(e) => ctx
                .reporter
                .warning(format!("machine {id} could not be rolled back: {e}")),
            Ok(_) if was_started => {
                match fleet::wait_state(
                    ctx.state,
                    &id,
                    &[MachineState::Started],
                    ctx.plan.wait_timeout,
                )
                .await
                {
                    Ok(_) => ctx.reporter.machine(&id, &group, "back on the previous release"),
                    Err(e) => ctx.reporter.warning(format!(
                        "machine {id} is back on the previous release's config but did not start: {e}"
                    )),
                }
            }
            Ok(_) => ctx.reporter.machine(&id, &group, "back on the previous release"),
        }
    });
    futures_util::future::join_all(restores).await;
    for id in created {
        destroy(ctx, &id).await;
    }
}

/// What a finished deploy says: the version, and where the app answers.
fn done_message(ctx: &Ctx<'_>) -> String {
    let mut m = format!("v{} deployed successfully", ctx.release.version);
    let host = ctx.state.edge.app_hostname(&ctx.plan.app.name);
    let (http, https) = ctx.state.edge_ports;
    let c = &ctx.plan.config;
    let tls = c.http_service.is_some()
        || c.services.iter().any(|s| {
            s.ports
                .iter()
                .any(|p| p.port == Some(443) && p.handlers.iter().any(|h| h == "tls"))
        });
    let plain = c.services.iter().any(|s| {
        s.ports
            .iter()
            .any(|p| p.port == Some(80) && p.handlers.iter().any(|h| h == "http"))
    });
    let port = |p: u16, default: u16| {
        if p == default {
            String::new()
        } else {
            format!(":{p}")
        }
    };
    if tls {
        m.push_str(&format!(
            "\nVisit your newly deployed app at https://{host}{}/",
            port(https, 443)
        ));
    } else if plain {
        m.push_str(&format!(
            "\nVisit your newly deployed app at http://{host}{}/",
            port(http, 80)
        ));
    }
    m
}
