//! `hangar machine run IMAGE [COMMAND...]`: a new machine from flags — image, command,
//! entrypoint, environment, restart policy and published ports — created and, unless
//! detached, waited for until it starts (or fails, with the reason the server gives).
//! Machines made from another machine's config are `clone`'s business, not this one's.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use hangar_client::Client;
use hangar_types::machine_config::{Autostop, MachineInit, MachineRestart};
use hangar_types::requests::CreateMachineRequest;
use hangar_types::{Machine, MachineConfig};

use super::{env_pairs, split, wait_for};
use crate::commands::AppArg;

#[derive(Args)]
pub struct RunArgs {
    image: String,
    /// Command (the image's CMD); put `--` before a command with flags of its own
    command: Vec<String>,
    #[command(flatten)]
    app: AppArg,
    #[arg(short = 'r', long)]
    region: Option<String>,
    /// Environment variable, KEY=VALUE; repeatable
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    #[arg(short = 'n', long)]
    name: Option<String>,
    /// Entrypoint, split like a shell would
    #[arg(long)]
    entrypoint: Option<String>,
    /// Restart policy: no, always, on-failure
    #[arg(long)]
    restart: Option<String>,
    /// Don't wait for the machine to start
    #[arg(short = 'd', long)]
    detach: bool,
    /// Publish a port through the proxy: [edge:]internal[/tcp[:handler...]], e.g.
    /// 80:8080/tcp:http; repeatable
    #[arg(short = 'p', long = "port")]
    ports: Vec<String>,
    /// What the proxy does to the machine when idle: off, stop or suspend
    #[arg(long, value_parser = ["off", "stop", "suspend"])]
    autostop: Option<String>,
    /// Whether the proxy starts the machine for a request
    #[arg(long)]
    autostart: Option<bool>,
}

pub async fn run(client: &Client, args: RunArgs) -> Result<()> {
    let app = args.app.name()?;
    let detach = args.detach;
    let req = CreateMachineRequest {
        name: args.name.clone(),
        region: args.region.clone(),
        config: Some(machine_config(args)?),
        ..Default::default()
    };
    let m = client.create_machine(&app, &req).await?;
    println!(
        "Machine {} ({}) created in region {}",
        m.id, m.name, m.region
    );
    if !detach {
        let state = wait_for(
            client,
            &app,
            &m.id,
            "started,failed",
            Duration::from_secs(60),
        )
        .await?;
        if state == "failed" {
            let m = client.get_machine(&app, &m.id).await?;
            bail!("machine {} failed to start: {}", m.id, failure_reason(&m));
        }
        println!("Machine {} is {state}", m.id);
    }
    Ok(())
}

/// The machine config the flags describe; what they leave out is the server's default.
fn machine_config(args: RunArgs) -> Result<MachineConfig> {
    let env = env_pairs(&args.env)?;
    let autostop = args.autostop.map(|a| match a.as_str() {
        "stop" => Autostop::Stop,
        "suspend" => Autostop::Suspend,
        _ => Autostop::Off,
    });
    let services = crate::commands::ports::services(&args.ports, autostop, args.autostart)?;
    Ok(MachineConfig {
        image: args.image,
        env: (!env.is_empty()).then_some(env),
        init: MachineInit {
            cmd: (!args.command.is_empty()).then_some(args.command),
            entrypoint: args
                .entrypoint
                .as_deref()
                .map(|e| split(e, "--entrypoint"))
                .transpose()?,
            ..Default::default()
        },
        restart: args.restart.map(|p| MachineRestart {
            policy: Some(p),
            max_retries: None,
        }),
        services: (!services.is_empty()).then_some(services),
        ..Default::default()
    })
}

/// Why a machine failed to start: the first error among its events, else where to look.
fn failure_reason(m: &Machine) -> String {
    m.events
        .iter()
        .find_map(|e| {
            e.request
                .as_ref()?
                .get("error")?
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "see `hangar machine status`".into())
}
