//! `hangar machine clone ID`: a new machine with another machine's config, as flyctl's
//! `fly machine clone` makes one — in the same region unless `--region` says otherwise,
//! with its own name, waited for until it starts. A volume is never shared: a clone
//! gets no mounts.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use hangar_client::Client;
use hangar_types::requests::CreateMachineRequest;

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
    if config.mounts.take().is_some_and(|m| !m.is_empty()) {
        eprintln!(
            "Note: the source's volume mounts are not cloned; a volume belongs to one machine"
        );
    }
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
    let m = client.create_machine(&app, &req).await?;
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
