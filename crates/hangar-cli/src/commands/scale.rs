//! `hangar scale count|vm|memory|show`, from the current release's config as flyctl
//! does (flytoml-and-deploys.md §9): new machines copy a machine of their group (or are
//! made from the release's config when the group has none), removed ones are destroyed
//! from the last region first.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use hangar_appconfig::compute;
use hangar_client::Client;
use hangar_types::billing;
use hangar_types::requests::CreateMachineRequest;
use hangar_types::{Machine, MachineConfig};
use serde::Serialize;

use super::status::app_machines;
use super::{confirm, AppArg};
use crate::{config, output};

#[derive(Subcommand)]
pub enum ScaleCmd {
    /// Set how many machines a group has: N, or GROUP=N / GROUP=+N / GROUP=-N ...
    Count {
        #[command(flatten)]
        app: AppArg,
        #[arg(required = true)]
        counts: Vec<String>,
        /// The group a bare N applies to
        #[arg(short = 'g', long = "process-group")]
        process_group: Option<String>,
        /// Regions to spread the machines over (comma-separated)
        #[arg(short = 'r', long = "region", value_delimiter = ',')]
        regions: Vec<String>,
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Set the machines' size preset (shared-cpu-1x, performance-2x, ...)
    Vm {
        #[command(flatten)]
        app: AppArg,
        size: String,
        /// Memory in MB (or with a unit, e.g. 1gb), over the preset's
        #[arg(long)]
        memory: Option<String>,
        #[arg(short = 'g', long = "process-group")]
        process_group: Option<String>,
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Set the machines' memory (MB, or with a unit)
    Memory {
        #[command(flatten)]
        app: AppArg,
        memory: String,
        #[arg(short = 'g', long = "process-group")]
        process_group: Option<String>,
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Show each group's count, size and regions
    Show {
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        json: bool,
    },
}

/// A target count: absolute, or relative to the group's count now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Exactly(u32),
    Plus(u32),
    Minus(u32),
}

fn parse_count(s: &str) -> Result<Target> {
    let bad = || anyhow::anyhow!("invalid count {s:?}: use a number such as 3, or +1 / -1");
    let t = if let Some(n) = s.strip_prefix('+') {
        Target::Plus(n.parse().map_err(|_| bad())?)
    } else if let Some(n) = s.strip_prefix('-') {
        Target::Minus(n.parse().map_err(|_| bad())?)
    } else {
        Target::Exactly(s.parse().map_err(|_| bad())?)
    };
    if t == Target::Plus(0) || t == Target::Minus(0) {
        bail!("invalid count {s:?}: +0 and -0 change nothing");
    }
    Ok(t)
}

/// The current release: its config, and the image and labels of machines made from it.
struct Release {
    config: hangar_appconfig::AppConfig,
    image: String,
    id: String,
    version: i64,
}

async fn release(client: &Client, app: &str) -> Result<Release> {
    let r = client.release(app, "current").await.with_context(|| {
        format!("app {app} has no complete releases yet; deploy it first with `hangar deploy`")
    })?;
    let loaded = hangar_appconfig::from_value(r.config)
        .map_err(|e| anyhow::anyhow!("the current release's config: {e}"))?;
    Ok(Release {
        config: loaded.config,
        image: r.release.image_ref,
        id: r.release.id,
        version: r.release.version,
    })
}

/// Spreads `total` machines over `regions`, the first regions taking the remainder.
fn spread(total: u32, regions: &[String]) -> BTreeMap<String, u32> {
    let n = regions.len().max(1) as u32;
    regions
        .iter()
        .enumerate()
        .map(|(i, r)| (r.clone(), total / n + u32::from((i as u32) < total % n)))
        .collect()
}

pub async fn run(cmd: ScaleCmd) -> Result<()> {
    let client = config::client()?;
    match cmd {
        ScaleCmd::Count {
            app,
            counts,
            process_group,
            regions,
            yes,
        } => count(&client, &app.name()?, counts, process_group, regions, yes).await,
        ScaleCmd::Vm {
            app,
            size,
            memory,
            process_group,
            yes,
        } => {
            let mut guest = compute::preset(&size).map_err(|e| anyhow::anyhow!(e))?;
            if let Some(m) = memory {
                guest.memory_mb = Some(memory_mb(&m)?);
            }
            resize(&client, &app.name()?, process_group, yes, |c| {
                c.guest = Some(guest.clone())
            })
            .await
        }
        ScaleCmd::Memory {
            app,
            memory,
            process_group,
            yes,
        } => {
            let mb = memory_mb(&memory)?;
            resize(&client, &app.name()?, process_group, yes, |c| {
                c.guest.get_or_insert_with(Default::default).memory_mb = Some(mb);
            })
            .await
        }
        ScaleCmd::Show { app, json } => show(&client, &app.name()?, json).await,
    }
}

fn memory_mb(text: &str) -> Result<u32> {
    let mb = compute::memory_mb(text).map_err(|e| anyhow::anyhow!(e))?;
    if mb < 128 {
        bail!("memory {text:?} is too small: give at least 128 MB");
    }
    Ok(mb)
}

/// One step of a scaling plan: `delta` machines more (or, negative, fewer) of `group`
/// in `region` (empty: the server's region).
struct Step {
    group: String,
    region: String,
    delta: i64,
}

async fn count(
    client: &Client,
    app: &str,
    counts: Vec<String>,
    process_group: Option<String>,
    regions: Vec<String>,
    yes: bool,
) -> Result<()> {
    let release = release(client, app).await?;
    let targets = targets(&counts, process_group, &release.config.groups())?;
    let machines = app_machines(client.list_machines(app, false).await?);
    let plan = plan(&targets, &machines, &regions, &release.config);
    if plan.is_empty() {
        println!("App {app} already has those counts; nothing to do");
        return Ok(());
    }
    println!("App '{app}' is going to be scaled according to this plan:");
    for step in &plan {
        let where_ = if step.region.is_empty() {
            "the server's region".to_string()
        } else {
            format!("region '{}'", step.region)
        };
        println!(
            "  {:+} machines for group '{}' on {where_}",
            step.delta, step.group
        );
    }
    confirm("Scale the app?", yes)?;
    remove_machines(client, app, &machines, &plan).await?;
    add_machines(client, app, &machines, &plan, &release).await
}

/// Each `GROUP=N` (or bare `N`, for `--process-group` or `app`) as a group and its
/// target; the error names a group the release's config does not have.
fn targets(
    counts: &[String],
    process_group: Option<String>,
    groups: &[String],
) -> Result<Vec<(String, Target)>> {
    let mut targets: Vec<(String, Target)> = Vec::new();
    for c in counts {
        let (g, n) = match c.split_once('=') {
            Some((g, n)) => (g.to_string(), n),
            None => (
                process_group.clone().unwrap_or_else(|| "app".into()),
                c.as_str(),
            ),
        };
        if !groups.contains(&g) {
            bail!(
                "process group '{g}' is not in the app's config; its groups are: {} (name one with --process-group or GROUP=N)",
                groups.join(", ")
            );
        }
        targets.push((g, parse_count(n)?));
    }
    Ok(targets)
}

/// The steps that take each group from its machines now to its target, region by
/// region; a region already at its share has none.
fn plan(
    targets: &[(String, Target)],
    machines: &[Machine],
    regions: &[String],
    cfg: &hangar_appconfig::AppConfig,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for (g, target) in targets {
        let mine: Vec<&Machine> = machines
            .iter()
            .filter(|m| m.config.process_group() == g)
            .collect();
        let now = mine.len() as u32;
        let want = match *target {
            Target::Exactly(n) => n,
            Target::Plus(n) => now + n,
            Target::Minus(n) => now.saturating_sub(n),
        };
        for (region, n) in spread(want, &group_regions(regions, &mine, cfg)) {
            let here = mine
                .iter()
                .filter(|m| region.is_empty() || m.region == region)
                .count() as i64;
            let delta = n as i64 - here;
            if delta != 0 {
                steps.push(Step {
                    group: g.clone(),
                    region,
                    delta,
                });
            }
        }
    }
    steps
}

/// The regions a group is spread over: those given with `--region`, else those its
/// machines are in, else the app's primary region.
fn group_regions(
    given: &[String],
    mine: &[&Machine],
    cfg: &hangar_appconfig::AppConfig,
) -> Vec<String> {
    let mut rs = given.to_vec();
    if rs.is_empty() {
        for m in mine {
            if !rs.contains(&m.region) {
                rs.push(m.region.clone());
            }
        }
    }
    if rs.is_empty() {
        rs.push(cfg.primary_region.clone().unwrap_or_default());
    }
    rs
}

/// Destroys the machines the plan removes, from the last region first.
async fn remove_machines(
    client: &Client,
    app: &str,
    machines: &[Machine],
    plan: &[Step],
) -> Result<()> {
    for Step {
        group: g,
        region,
        delta,
    } in plan.iter().rev().filter(|s| s.delta < 0)
    {
        let victims: Vec<&Machine> = machines
            .iter()
            .filter(|m| m.config.process_group() == g && (region.is_empty() || &m.region == region))
            .rev()
            .take((-delta) as usize)
            .collect();
        for m in victims {
            client.destroy_machine(app, &m.id, true).await?;
            println!("Destroyed machine {} [{g}] in {}", m.id, m.region);
        }
    }
    Ok(())
}

/// Creates the machines the plan adds, each a copy of a machine of its group (or made
/// from the release's config when the group has none), and waits for each to start.
async fn add_machines(
    client: &Client,
    app: &str,
    machines: &[Machine],
    plan: &[Step],
    release: &Release,
) -> Result<()> {
    for Step {
        group: g,
        region,
        delta,
    } in plan.iter().filter(|s| s.delta > 0)
    {
        let config = match machines.iter().find(|m| m.config.process_group() == g) {
            Some(m) => {
                let mut c = m.config.clone();
                c.standbys = None;
                c
            }
            None => new_config(release, g)?,
        };
        for _ in 0..*delta {
            let mut config = config.clone();
            volume_for(client, app, region, &mut config).await?;
            let req = CreateMachineRequest {
                config: Some(config),
                region: (!region.is_empty()).then(|| region.clone()),
                ..Default::default()
            };
            let m = client.create_machine(app, &req).await?;
            client.wait(app, &m.id, "started", 60).await?;
            println!("Created machine {} [{g}] in {}", m.id, m.region);
        }
    }
    Ok(())
}

/// A machine config for a group with no machines, from the release's config.
fn new_config(release: &Release, group: &str) -> Result<MachineConfig> {
    let mut c = release
        .config
        .to_machine_config(group, None)
        .map_err(|e| anyhow::anyhow!("group '{group}': {e}"))?;
    c.image = release.image.clone();
    let md = c.metadata.get_or_insert_with(Default::default);
    md.insert("fly_release_id".into(), release.id.clone());
    md.insert("fly_release_version".into(), release.version.to_string());
    Ok(c)
}

/// Applies `change` to the config of every machine of the group (all groups by
/// default); each machine restarts with it.
async fn resize(
    client: &Client,
    app: &str,
    group: Option<String>,
    yes: bool,
    change: impl Fn(&mut MachineConfig),
) -> Result<()> {
    let machines: Vec<Machine> = app_machines(client.list_machines(app, false).await?)
        .into_iter()
        .filter(|m| {
            group
                .as_deref()
                .is_none_or(|g| m.config.process_group() == g)
        })
        .collect();
    if machines.is_empty() {
        bail!(
            "app {app} has no machines{} to resize",
            group
                .map(|g| format!(" in group '{g}'"))
                .unwrap_or_default()
        );
    }
    confirm(
        &format!(
            "Resize {} machine(s) of {app}? Each restarts.",
            machines.len()
        ),
        yes,
    )?;
    for m in machines {
        let mut config = m.config.clone();
        change(&mut config);
        let req = CreateMachineRequest {
            config: Some(config),
            ..Default::default()
        };
        client.update_machine(app, &m.id, &req, None).await?;
        println!("Machine {} [{}] resized", m.id, m.config.process_group());
    }
    Ok(())
}

#[derive(Serialize)]
struct GroupScale {
    process_group: String,
    count: usize,
    cpu_kind: String,
    cpus: u32,
    memory_mb: u32,
    regions: Vec<String>,
    /// The group's volumes: how many, and their sizes added up.
    volumes: usize,
    volume_gb: u32,
    /// What one machine of this size costs for 30 days running, and the group.
    #[serde(skip_serializing_if = "Option::is_none")]
    monthly_per_machine: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    monthly: Option<f64>,
}

async fn show(client: &Client, app: &str, json: bool) -> Result<()> {
    let machines = app_machines(client.list_machines(app, false).await?);
    // The estimate needs the server's price table; the sizes are shown without it.
    let prices = client.prices().await.ok();
    let volumes = client.list_volumes(app, false).await.unwrap_or_default();
    let mut groups: BTreeMap<String, GroupScale> = BTreeMap::new();
    for m in &machines {
        let g = m.config.guest.clone().unwrap_or_default();
        let (preset, billed_memory) = billing::billed_size(m.config.guest.as_ref());
        let each = prices
            .as_ref()
            .and_then(|p| p.machine_per_second(&preset, billed_memory))
            .map(|s| s * billing::SECONDS_PER_30_DAYS);
        let e = groups
            .entry(m.config.process_group().to_string())
            .or_insert_with(|| GroupScale {
                process_group: m.config.process_group().to_string(),
                count: 0,
                cpu_kind: g.cpu_kind.clone().unwrap_or_else(|| "shared".into()),
                cpus: g.cpus.unwrap_or(1),
                memory_mb: billed_memory,
                regions: Vec::new(),
                volumes: 0,
                volume_gb: 0,
                monthly_per_machine: each,
                monthly: None,
            });
        e.count += 1;
        for mount in m.config.mounts.iter().flatten() {
            if let Some(v) = volumes.iter().find(|v| v.id == mount.volume) {
                e.volumes += 1;
                e.volume_gb += v.size_gb;
            }
        }
        e.monthly = e.monthly_per_machine.map(|each| each * e.count as f64);
        if !e.regions.contains(&m.region) {
            e.regions.push(m.region.clone());
        }
    }
    let list: Vec<GroupScale> = groups.into_values().collect();
    if json {
        return output::json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|g| {
            vec![
                g.process_group.clone(),
                g.count.to_string(),
                g.cpu_kind.clone(),
                g.cpus.to_string(),
                format!("{} MB", g.memory_mb),
                g.regions.join(","),
                if g.volumes == 0 {
                    "-".into()
                } else {
                    format!("{} ({} GB)", g.volumes, g.volume_gb)
                },
                match (g.monthly_per_machine, g.monthly) {
                    (Some(each), Some(all)) => format!("${each:.2} each, ${all:.2}"),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    output::table(
        &[
            "NAME",
            "COUNT",
            "KIND",
            "CPUS",
            "MEMORY",
            "REGIONS",
            "VOLUMES",
            "PER 30 DAYS RUNNING",
        ],
        &rows,
    );
    Ok(())
}

/// Gives a new machine's mount a volume of its own, as `fly scale count` does: a free
/// volume of the same name in the region, else a new one of the same size (never one
/// another machine holds, and never by destroying data).
async fn volume_for(
    client: &hangar_client::Client,
    app: &str,
    region: &str,
    config: &mut hangar_types::MachineConfig,
) -> Result<()> {
    let Some(mount) = config.mounts.as_deref_mut().and_then(|m| m.first_mut()) else {
        return Ok(());
    };
    let volumes = client.list_volumes(app, false).await?;
    let held = volumes.iter().find(|v| v.id == mount.volume);
    let name = mount
        .name
        .clone()
        .or_else(|| held.map(|v| v.name.clone()))
        .unwrap_or_else(|| "data".into());
    let size = held.map(|v| v.size_gb).or(mount.size_gb).unwrap_or(1);
    let free = volumes.iter().find(|v| {
        v.name == name
            && v.attached_machine_id.is_none()
            && (region.is_empty() || v.region == region)
    });
    mount.volume = match free {
        Some(v) => v.id.clone(),
        None => {
            let req = hangar_types::volume::CreateVolumeRequest {
                name: Some(name),
                region: (!region.is_empty()).then(|| region.to_string()),
                size_gb: Some(i64::from(size)),
                ..Default::default()
            };
            let v = client.create_volume(app, &req).await?;
            println!(
                "Created volume {} ({}, {} GB in {})",
                v.id, v.name, v.size_gb, v.region
            );
            v.id
        }
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_spread() {
        assert_eq!(parse_count("3").ok(), Some(Target::Exactly(3)));
        assert_eq!(parse_count("+2").ok(), Some(Target::Plus(2)));
        assert!(parse_count("+0").is_err());
        assert!(parse_count("many").is_err());
        let s = spread(5, &["a".into(), "b".into()]);
        assert_eq!((s["a"], s["b"]), (3, 2));
    }
}
