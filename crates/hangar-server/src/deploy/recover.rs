//! After a restart: a deploy the server was running when it stopped is undone, as a
//! failed one would be, so a crash leaves no app half on one release and half on the
//! next. Each machine that carries the interrupted release goes back to its previous
//! config (its version history has it); machines the deploy created are destroyed —
//! except the green machines of a bluegreen deploy past its cutover (a green takes
//! traffic), which are the app now: they are kept and the blue machines left go.

use std::collections::BTreeMap;
use std::time::Duration;

use hangar_appconfig::machine::metadata;
use hangar_store::{MachineRecord, ReleaseRecord};
use hangar_types::{MachineConfig, MachineState};

use crate::{clock, fleet, AppState};

/// How long a machine may take to settle before it is reverted.
const SETTLE: Duration = Duration::from_secs(60);

const RESTING: &[MachineState] = &MachineState::RESTING;

fn release_of(c: &MachineConfig) -> Option<&str> {
    c.metadata
        .as_ref()
        .and_then(|m| m.get(metadata::RELEASE_ID))
        .map(String::as_str)
}

/// Marks the releases a stopped server left running as interrupted and returns them.
pub async fn mark_interrupted(state: &AppState) -> Vec<ReleaseRecord> {
    let now = clock::rfc3339_now();
    let r = state
        .store
        .call(move |db| {
            let unfinished = db.unfinished_releases()?;
            for r in &unfinished {
                db.set_release_status(
                    &r.id,
                    hangar_types::deploy::ReleaseStatus::Interrupted,
                    Some("the server stopped while this release was deploying; its changes are undone; deploy again"),
                    &now,
                )?;
            }
            Ok(unfinished)
        })
        .await;
    r.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "mark interrupted releases");
        Vec::new()
    })
}

/// Undoes what each interrupted release changed.
pub async fn undo_all(state: AppState, releases: Vec<ReleaseRecord>) {
    for r in releases {
        let (reverted, removed) = undo(&state, &r).await;
        tracing::info!(app = %r.app_name, release = r.version, reverted, removed, "interrupted deploy undone");
    }
}

async fn undo(state: &AppState, r: &ReleaseRecord) -> (usize, usize) {
    let app = r.app_name.clone();
    let machines = state
        .store
        .call(move |db| db.live_machines_of_app(&app))
        .await
        .unwrap_or_default();
    let mut groups: BTreeMap<String, Vec<MachineRecord>> = BTreeMap::new();
    for m in machines {
        groups
            .entry(m.config.process_group().to_string())
            .or_default()
            .push(m);
    }
    let (mut reverted, mut removed) = (0, 0);
    for ms in groups.values() {
        let mut ours = Vec::new();
        for m in ms
            .iter()
            .filter(|m| release_of(&m.config) == Some(r.id.as_str()))
        {
            let _ = fleet::wait_state(state, &m.id, RESTING, SETTLE).await;
            let id = m.id.clone();
            let previous = state
                .store
                .call(move |db| db.versions(&id))
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|(_, c)| c)
                .find(|c| release_of(c) != Some(r.id.as_str()));
            ours.push((m, previous));
        }
        // Bluegreen past its cutover (a green machine takes traffic): the greens are
        // the app now; the blues left go.
        let cut_over = r.strategy == hangar_types::deploy::DeployStrategy::Bluegreen
            && ours.iter().any(|(m, prev)| prev.is_none() && !m.cordoned);
        if cut_over {
            for (m, _) in &ours {
                let _ = state.agent.cordon(&m.id, false).await;
            }
            for m in ms
                .iter()
                .filter(|m| release_of(&m.config) != Some(r.id.as_str()))
            {
                if state.agent.destroy(&m.id, true).await.is_ok() {
                    removed += 1;
                }
            }
            continue;
        }
        for (m, previous) in ours {
            let now = state.agent.state(&m.id).await.unwrap_or(m.state);
            match previous {
                Some(config) => {
                    let skip_launch = !matches!(now, MachineState::Started | MachineState::Failed);
                    let done = state.agent.update(&m.id, config, skip_launch).await;
                    if done.is_ok() {
                        reverted += 1;
                    }
                }
                None => {
                    if state.agent.destroy(&m.id, true).await.is_ok() {
                        removed += 1;
                    }
                }
            }
        }
    }
    (reverted, removed)
}
