//! `hangar status [--json]`: the app, its current release, and its machines by process
//! group and region with state, checks, release version and last update; and
//! `hangar apps restart`.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use hangar_types::Machine;
use serde::Serialize;

use super::AppArg;
use crate::{config, output};

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub app: AppArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct MachineStatus {
    id: String,
    process_group: String,
    region: String,
    state: String,
    version: Option<String>,
    checks_passing: usize,
    checks_total: usize,
    /// The volume mounted in the machine, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    volume: Option<String>,
    updated_at: String,
}

#[derive(Serialize)]
struct AppStatus {
    name: String,
    release: Option<i64>,
    release_status: Option<String>,
    image: Option<String>,
    machines: Vec<MachineStatus>,
}

fn version_of(m: &Machine) -> Option<String> {
    m.config
        .metadata
        .as_ref()
        .and_then(|md| md.get("fly_release_version"))
        .cloned()
}

/// The app's machines that a deploy manages or a user made, not release commands.
pub fn app_machines(machines: Vec<Machine>) -> Vec<Machine> {
    machines
        .into_iter()
        .filter(|m| m.config.process_group() != "fly_app_release_command")
        .collect()
}

pub async fn run(args: StatusArgs) -> Result<()> {
    let client = config::client()?;
    let app = args.app.name()?;
    client.get_app(&app).await?;
    let current = client.release(&app, "current").await.ok();
    let machines = app_machines(client.list_machines(&app, false).await?);
    let status = AppStatus {
        name: app.clone(),
        release: current.as_ref().map(|r| r.release.version),
        release_status: current.as_ref().map(|r| r.release.status.to_string()),
        image: current.as_ref().map(|r| r.release.image_ref.clone()),
        machines: machines.iter().map(machine_status).collect(),
    };
    if args.json {
        return output::json(&status);
    }
    println!("App");
    println!("  Name     = {}", status.name);
    match (&status.release, &status.image) {
        (Some(v), Some(img)) => {
            println!("  Release  = v{v}");
            println!("  Image    = {img}");
        }
        _ => println!("  Release  = none (deploy with `hangar deploy`)"),
    }
    println!();
    if status.machines.is_empty() {
        println!("No machines are running for this app");
        return Ok(());
    }
    print_machines(&status.machines);
    Ok(())
}

fn machine_status(m: &Machine) -> MachineStatus {
    MachineStatus {
        id: m.id.clone(),
        process_group: m.config.process_group().to_string(),
        region: m.region.clone(),
        state: m.state.clone(),
        version: version_of(m),
        checks_passing: m
            .checks
            .iter()
            .filter(|c| c.status == hangar_types::CheckState::Passing)
            .count(),
        checks_total: m.checks.len(),
        volume: m
            .config
            .mounts
            .iter()
            .flatten()
            .next()
            .map(|v| v.volume.clone()),
        updated_at: m.updated_at.clone(),
    }
}

/// The machines table, grouped by process group.
fn print_machines(machines: &[MachineStatus]) {
    let mut groups: BTreeMap<&str, Vec<&MachineStatus>> = BTreeMap::new();
    for m in machines {
        groups.entry(&m.process_group).or_default().push(m);
    }
    println!("Machines");
    let rows: Vec<Vec<String>> = groups
        .values()
        .flatten()
        .map(|m| {
            vec![
                m.process_group.clone(),
                m.id.clone(),
                m.version
                    .clone()
                    .map(|v| format!("v{v}"))
                    .unwrap_or_else(|| "-".into()),
                m.region.clone(),
                m.state.clone(),
                if m.checks_total == 0 {
                    String::new()
                } else {
                    format!("{} total, {} passing", m.checks_total, m.checks_passing)
                },
                m.volume.clone().unwrap_or_default(),
                m.updated_at.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            "PROCESS",
            "ID",
            "VERSION",
            "REGION",
            "STATE",
            "CHECKS",
            "VOLUME",
            "LAST UPDATED",
        ],
        &rows,
    );
}

/// `hangar apps restart [APP]`: restarts every started machine, one at a time, each
/// waited for until it is started and (unless told not to) passing its checks.
pub async fn restart(app: &str, force_stop: bool, wait_checks: bool) -> Result<()> {
    let client = config::client()?;
    let machines = app_machines(client.list_machines(app, false).await?);
    let mut restarted = 0;
    let action = if force_stop {
        "restart?force_stop=true"
    } else {
        "restart"
    };
    for m in machines.iter().filter(|m| m.state == "started") {
        println!("Restarting machine {}", m.id);
        client.action(app, &m.id, action, None).await?;
        client.wait(app, &m.id, "started", 60).await?;
        if wait_checks {
            wait_for_checks(&client, app, &m.id).await?;
        }
        restarted += 1;
    }
    println!("Restarted {restarted} machine(s) of {app}");
    Ok(())
}

/// How many checks a machine with `config` runs: service checks, and top-level checks
/// that name a port (the others are never run, so they never pass).
fn checks_run(config: &hangar_types::MachineConfig) -> usize {
    let top = config
        .checks
        .iter()
        .flatten()
        .filter(|(_, c)| c.port.is_some())
        .count();
    let services: usize = config
        .services
        .iter()
        .flatten()
        .map(|s| s.checks.as_ref().map_or(0, Vec::len))
        .sum();
    top + services
}

/// Waits up to five minutes for every check of the machine to pass.
async fn wait_for_checks(client: &hangar_client::Client, app: &str, id: &str) -> Result<()> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let m = client.get_machine(app, id).await?;
        let expected = checks_run(&m.config);
        let passing = m
            .checks
            .iter()
            .filter(|c| c.status == hangar_types::CheckState::Passing)
            .count();
        if passing >= expected {
            return Ok(());
        }
        if std::time::Instant::now() > until {
            anyhow::bail!(
                "machine {id} restarted, but its checks did not pass within 5 minutes ({passing} of {expected} passing); see `hangar machine status {id} -a {app}`"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_checks_that_run_are_waited_for() {
        let config: hangar_types::MachineConfig = serde_json::from_value(serde_json::json!({
            "image": "x",
            "checks": {"alive": {"type": "tcp", "port": 8080}, "portless": {"type": "tcp"}},
            "services": [{"protocol": "tcp", "internal_port": 8080,
                "checks": [{"type": "http", "path": "/"}]}]
        }))
        .expect("config");
        assert_eq!(checks_run(&config), 2);
    }
}
