//! `hangar machine clone ID`: a new machine with another machine's config, as flyctl's
//! `fly machine clone` makes one — in the same region unless `--region` says otherwise,
//! with its own name, waited for until it starts. A volume is never shared: a clone of
//! a machine with a volume gets a new one of the same name and size at the same path
//! (empty, or restored with `--from-snapshot ID|last`), or a free volume named with
//! `--attach-volume ID[:PATH]`.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use hangar_client::Client;
use hangar_types::requests::CreateMachineRequest;
use hangar_types::volume::{CreateVolumeRequest, MachineMount};

use super::{split, wait_for};
use crate::commands::AppArg;
use crate::output;

#[derive(Args)]
pub struct CloneArgs {
    /// The machine to clone
    pub id: String,
    #[command(flatten)]
    pub app: AppArg,
    /// Region for the new machine (default: the source's)
    #[arg(short = 'r', long)]
    pub region: Option<String>,
    /// Name for the new machine (default: a generated one)
    #[arg(long)]
    pub name: Option<String>,
    /// Process group for the new machine
    #[arg(long)]
    pub process_group: Option<String>,
    /// Run this command instead of the source's, split like a shell would
    #[arg(long)]
    pub override_cmd: Option<String>,
    /// Run the image's own command, not the source's
    #[arg(long)]
    pub clear_cmd: bool,
    /// Keep the clone after it exits, even if the source is destroyed on exit
    #[arg(long)]
    pub clear_auto_destroy: bool,
    /// A free volume to attach instead of creating one: <volume_id>[:/path/inside/machine]
    #[arg(long)]
    pub attach_volume: Option<String>,
    /// Restore the new volume from this snapshot of the source's volume (`last` for the
    /// newest) instead of making it empty
    #[arg(long)]
    pub from_snapshot: Option<String>,
    /// Return once the machine is created, without waiting for it to start
    #[arg(short = 'd', long)]
    pub detach: bool,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(client: &Client, args: CloneArgs) -> Result<()> {
    let app = args.app.name()?;
    let source = client.get_machine(&app, &args.id).await?;
    if source.state == "destroyed" {
        bail!(
            "machine {} is destroyed; clone a machine that exists",
            args.id
        );
    }
    let region = args.region.clone().unwrap_or_else(|| source.region.clone());
    let mut config = source.config.clone();
    let source_mount = config.mounts.take().and_then(|m| m.into_iter().next());
    config.mounts = match (&args.attach_volume, source_mount) {
        (Some(spec), mount) => Some(vec![attach(spec, mount.as_ref())?]),
        (None, Some(mount)) => Some(vec![
            new_volume(
                client,
                &app,
                &region,
                &mount,
                args.from_snapshot.as_deref(),
                args.json,
            )
            .await?,
        ]),
        (None, None) => {
            if args.from_snapshot.is_some() {
                bail!(
                    "--from-snapshot needs a source machine with a volume; {} has none",
                    args.id
                );
            }
            None
        }
    };
    if let Some(cmd) = &args.override_cmd {
        config.init.cmd = Some(split(cmd, "--override-cmd")?);
    } else if args.clear_cmd {
        config.init.cmd = None;
    }
    if args.clear_auto_destroy {
        config.auto_destroy = Some(false);
    }
    if let Some(group) = &args.process_group {
        config
            .metadata
            .get_or_insert_with(Default::default)
            .insert("fly_process_group".into(), group.clone());
    }
    if !args.json {
        println!("Cloning machine {} into region {region}", source.id);
        println!("Provisioning a new machine with image {}", config.image);
    }
    let req = CreateMachineRequest {
        name: args.name.clone(),
        region: Some(region),
        config: Some(config),
        ..Default::default()
    };
    let m = match client.create_machine(&app, &req).await {
        Ok(m) => m,
        Err(e) => {
            // A volume made for this clone goes with it: nothing half-made stays.
            if let (None, Some(mount)) = (
                &args.attach_volume,
                req.config
                    .as_ref()
                    .and_then(|c| c.mounts.as_ref())
                    .and_then(|m| m.first()),
            ) {
                let _ = client.destroy_volume(&app, &mount.volume).await;
            }
            return Err(e.into());
        }
    };
    if !args.json {
        println!("  Machine {} has been created", m.id);
    }
    if !args.detach {
        if !args.json {
            println!("  Waiting for machine {} to start...", m.id);
        }
        let state = wait_for(
            client,
            &app,
            &m.id,
            "started,failed",
            Duration::from_secs(300),
        )
        .await?;
        if state == "failed" {
            bail!(
                "machine {} failed to start; see `hangar logs -a {app}` and `hangar machine status {} -a {app}`",
                m.id,
                m.id
            );
        }
    }
    if args.json {
        return output::json(&client.get_machine(&app, &m.id).await?);
    }
    println!(
        "Machine has been successfully cloned: {} ({})",
        m.id, m.name
    );
    Ok(())
}

/// The mount for `--attach-volume <volume_id>[:/path]`, at the source's path by default.
fn attach(spec: &str, source: Option<&MachineMount>) -> Result<MachineMount> {
    let (volume, path) = match spec.split_once(':') {
        Some((v, p)) => (v, Some(p.to_string())),
        None => (spec, None),
    };
    let Some(path) = path.or_else(|| source.map(|m| m.path.clone())) else {
        bail!("--attach-volume {spec}: the source has no mount, so say where: <volume_id>:/path");
    };
    if !volume.starts_with("vol_") {
        bail!("--attach-volume {spec}: expected a volume id (vol_...), as `hangar volumes list` shows");
    }
    Ok(MachineMount {
        volume: volume.to_string(),
        path,
        ..Default::default()
    })
}

/// A new volume like the source's (same name and size), mounted where the source's is.
async fn new_volume(
    client: &Client,
    app: &str,
    region: &str,
    mount: &MachineMount,
    from_snapshot: Option<&str>,
    quiet: bool,
) -> Result<MachineMount> {
    let volume = client.get_volume(app, &mount.volume).await?;
    let snapshot_id = match from_snapshot {
        Some("last") => match client.list_snapshots(app, &volume.id).await?.pop() {
            Some(s) => Some(s.id),
            None => bail!(
                "volume {} has no snapshots; take one with `hangar volumes snapshots create {}`",
                volume.id,
                volume.id
            ),
        },
        other => other.map(str::to_string),
    };
    let req = CreateVolumeRequest {
        name: Some(volume.name.clone()),
        region: Some(region.to_string()),
        size_gb: Some(i64::from(volume.size_gb)),
        snapshot_id,
        snapshot_retention: Some(i64::from(volume.snapshot_retention)),
        auto_backup_enabled: Some(volume.auto_backup_enabled),
        fstype: Some(volume.fstype.clone()),
        ..Default::default()
    };
    let made = client.create_volume(app, &req).await?;
    if !quiet {
        println!(
            "Created volume {} ({}, {} GB) for the clone",
            made.id, made.name, made.size_gb
        );
    }
    Ok(MachineMount {
        volume: made.id,
        ..mount.clone()
    })
}
