//! `hangar machine ...`: run, clone, list, status, start, stop, restart, suspend,
//! destroy, update, wait, exec, leases, cordon, uncordon — flyctl's `fly machine`
//! commands.

mod clone;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use hangar_client::Client;
use hangar_types::machine_config::{Autostop, MachineInit, MachineRestart};
use hangar_types::requests::{CreateMachineRequest, StopRequest};
use hangar_types::{GoDuration, Machine, MachineConfig, Signal};
use serde_json::json;

use super::{confirm, AppArg};
use crate::{config, output};

#[derive(Subcommand)]
pub enum MachineCmd {
    /// Create and start a machine
    Run {
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
    },
    /// Create a machine with another machine's config
    Clone(clone::CloneArgs),
    /// List an app's machines
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        json: bool,
    },
    /// Show a machine's details and recent events
    Status {
        id: String,
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        json: bool,
    },
    /// Start machines
    Start {
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Stop machines
    Stop {
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArg,
        #[arg(short = 's', long)]
        signal: Option<String>,
        /// Time to wait before SIGKILL, e.g. 10s
        #[arg(long)]
        timeout: Option<String>,
    },
    /// Restart machines
    Restart {
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Suspend machines, keeping their memory
    Suspend {
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Destroy machines
    #[command(alias = "remove", alias = "rm")]
    Destroy {
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArg,
        /// Kill a running machine instead of refusing
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Change a machine's config (a new version)
    Update {
        id: String,
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        image: Option<String>,
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// New command, split like a shell would
        #[arg(long)]
        command: Option<String>,
        #[arg(long)]
        skip_start: bool,
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Wait for a machine to reach a state
    Wait {
        id: String,
        #[command(flatten)]
        app: AppArg,
        #[arg(long, default_value = "started")]
        state: String,
        /// Overall time to wait, e.g. 5m
        #[arg(long = "wait-timeout", default_value = "5m")]
        wait_timeout: String,
    },
    /// Run a command in a machine
    Exec {
        id: String,
        command: String,
        #[command(flatten)]
        app: AppArg,
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Manage machine leases
    #[command(subcommand)]
    Leases(LeasesCmd),
    /// Stop the proxy routing to machines
    Cordon {
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Let the proxy route to machines again
    Uncordon {
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArg,
    },
}

#[derive(Subcommand)]
pub enum LeasesCmd {
    /// Show the leases on machines
    View {
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        json: bool,
    },
    /// Release the leases on machines, whoever holds them
    Clear {
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArg,
    },
}

fn env_pairs(list: &[String]) -> Result<BTreeMap<String, String>> {
    list.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("invalid --env {kv:?}: use KEY=VALUE"),
        })
        .collect()
}

pub(super) fn split(s: &str, what: &str) -> Result<Vec<String>> {
    hangar_types::requests::shell_split(s)
        .with_context(|| format!("invalid {what} {s:?}: unbalanced quotes"))
}

fn need_ids(ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        bail!("give at least one machine ID");
    }
    Ok(())
}

/// Calls `wait` in 60-second slices until `state` or the overall deadline.
pub(super) async fn wait_for(
    client: &Client,
    app: &str,
    id: &str,
    state: &str,
    overall: Duration,
) -> Result<String> {
    let until = Instant::now() + overall;
    loop {
        let left = until
            .saturating_duration_since(Instant::now())
            .as_secs()
            .clamp(1, 60);
        match client.wait(app, id, state, left).await {
            Ok(w) => return Ok(w.state),
            Err(e) if e.status().map(|s| s.as_u16()) == Some(408) && Instant::now() < until => {
                continue
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn row(m: &Machine) -> Vec<String> {
    vec![
        m.id.clone(),
        m.name.clone(),
        m.state.clone(),
        m.region.clone(),
        m.config.image.clone(),
        m.private_ip.clone(),
        m.instance_id.clone(),
        m.created_at.clone(),
        m.updated_at.clone(),
    ]
}

const HEADERS: [&str; 9] = [
    "ID",
    "NAME",
    "STATE",
    "REGION",
    "IMAGE",
    "IP ADDRESS",
    "VERSION",
    "CREATED",
    "LAST UPDATED",
];

pub async fn run(cmd: MachineCmd) -> Result<ExitCode> {
    let client = config::client()?;
    match cmd {
        MachineCmd::Clone(args) => clone::run(&client, args).await?,
        MachineCmd::Run {
            image,
            command,
            app,
            region,
            env,
            name,
            entrypoint,
            restart,
            detach,
            ports,
            autostop,
            autostart,
        } => {
            let app = app.name()?;
            let env = env_pairs(&env)?;
            let autostop = autostop.map(|a| match a.as_str() {
                "stop" => Autostop::Stop,
                "suspend" => Autostop::Suspend,
                _ => Autostop::Off,
            });
            let services = super::ports::services(&ports, autostop, autostart)?;
            let config = MachineConfig {
                image,
                env: (!env.is_empty()).then_some(env),
                init: MachineInit {
                    cmd: (!command.is_empty()).then_some(command),
                    entrypoint: entrypoint
                        .as_deref()
                        .map(|e| split(e, "--entrypoint"))
                        .transpose()?,
                    ..Default::default()
                },
                restart: restart.map(|p| MachineRestart {
                    policy: Some(p),
                    max_retries: None,
                }),
                services: (!services.is_empty()).then_some(services),
                ..Default::default()
            };
            let req = CreateMachineRequest {
                name,
                region,
                config: Some(config),
                ..Default::default()
            };
            let m = client.create_machine(&app, &req).await?;
            println!(
                "Machine {} ({}) created in region {}",
                m.id, m.name, m.region
            );
            if !detach {
                let state = wait_for(
                    &client,
                    &app,
                    &m.id,
                    "started,failed",
                    Duration::from_secs(60),
                )
                .await?;
                if state == "failed" {
                    let m = client.get_machine(&app, &m.id).await?;
                    let why = m
                        .events
                        .iter()
                        .find_map(|e| {
                            e.request
                                .as_ref()?
                                .get("error")?
                                .as_str()
                                .map(str::to_string)
                        })
                        .unwrap_or_else(|| "see `hangar machine status`".into());
                    bail!("machine {} failed to start: {why}", m.id);
                }
                println!("Machine {} is {state}", m.id);
            }
        }
        MachineCmd::List { app, json } => {
            let list = client.list_machines(&app.name()?, false).await?;
            if json {
                output::json(&list)?;
            } else {
                output::table(&HEADERS, &list.iter().map(row).collect::<Vec<_>>());
            }
        }
        MachineCmd::Status { id, app, json } => {
            let m = client.get_machine(&app.name()?, &id).await?;
            if json {
                return output::json(&m).map(|_| ExitCode::SUCCESS);
            }
            output::table(&HEADERS, &[row(&m)]);
            println!("\nEvent Logs");
            let events: Vec<Vec<String>> = m
                .events
                .iter()
                .map(|e| {
                    vec![
                        e.status.clone(),
                        e.kind.to_string(),
                        e.source.clone(),
                        e.timestamp.to_string(),
                    ]
                })
                .collect();
            output::table(&["STATE", "EVENT", "SOURCE", "TIMESTAMP"], &events);
        }
        MachineCmd::Start { ids, app } => {
            let (app, _) = (app.name()?, need_ids(&ids)?);
            for id in ids {
                client.action(&app, &id, "start", None).await?;
                println!("{id} has been started");
            }
        }
        MachineCmd::Stop {
            ids,
            app,
            signal,
            timeout,
        } => {
            let (app, _) = (app.name()?, need_ids(&ids)?);
            let req = StopRequest {
                signal: signal.map(|s| s.parse::<Signal>()).transpose()?,
                timeout: timeout.map(|t| GoDuration::parse(&t)).transpose()?,
            };
            for id in ids {
                client.stop_machine(&app, &id, &req).await?;
                println!(
                    "Sent {} to machine {id}",
                    req.signal
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "kill signal".into())
                );
            }
        }
        MachineCmd::Restart { ids, app } => {
            let (app, _) = (app.name()?, need_ids(&ids)?);
            for id in ids {
                client.action(&app, &id, "restart", None).await?;
                wait_for(&client, &app, &id, "started", Duration::from_secs(120)).await?;
                println!("Machine {id} restarted successfully!");
            }
        }
        MachineCmd::Suspend { ids, app } => {
            let (app, _) = (app.name()?, need_ids(&ids)?);
            for id in ids {
                client.action(&app, &id, "suspend", None).await?;
                println!("{id} has been suspended");
            }
        }
        MachineCmd::Destroy {
            ids,
            app,
            force,
            yes,
        } => {
            let (app, _) = (app.name()?, need_ids(&ids)?);
            confirm(&format!("Destroy machine(s) {}?", ids.join(", ")), yes)?;
            for id in ids {
                client.destroy_machine(&app, &id, force).await?;
                println!("machine {id} was found and is currently being destroyed");
            }
        }
        MachineCmd::Update {
            id,
            app,
            image,
            env,
            command,
            skip_start,
            yes,
        } => {
            let app = app.name()?;
            let m = client.get_machine(&app, &id).await?;
            let mut config = m.config.clone();
            if let Some(image) = image {
                config.image = image;
            }
            let env = env_pairs(&env)?;
            if !env.is_empty() {
                config.env.get_or_insert_with(Default::default).extend(env);
            }
            if let Some(c) = command {
                config.init.cmd = Some(split(&c, "--command")?);
                config.init.exec = None;
            }
            if config == m.config {
                println!("No changes to apply");
                return Ok(ExitCode::SUCCESS);
            }
            confirm(&format!("Update machine {id}?"), yes)?;
            let req = CreateMachineRequest {
                config: Some(config),
                current_version: Some(m.instance_id.clone()),
                skip_launch: skip_start.then_some(true),
                ..Default::default()
            };
            let updated = client.update_machine(&app, &id, &req, None).await?;
            println!("Machine {id} updated to version {}", updated.instance_id);
            if m.state == "started" && !skip_start {
                wait_for(&client, &app, &id, "started", Duration::from_secs(120)).await?;
                println!("Machine {id} is started");
            }
        }
        MachineCmd::Wait {
            id,
            app,
            state,
            wait_timeout,
        } => {
            let overall = GoDuration::parse(&wait_timeout)?.0;
            let reached = wait_for(&client, &app.name()?, &id, &state, overall).await?;
            println!("Machine {id} reached state {reached}");
        }
        MachineCmd::Exec {
            id,
            command,
            app,
            timeout,
        } => {
            let out = client
                .exec(
                    &app.name()?,
                    &id,
                    split(&command, "command")?,
                    Some(timeout),
                )
                .await?;
            print!("{}", out.stdout);
            eprint!("{}", out.stderr);
            return Ok(ExitCode::from(out.exit_code.clamp(0, 255) as u8));
        }
        MachineCmd::Leases(LeasesCmd::View {
            ids,
            app,
            json: as_json,
        }) => {
            let (app, _) = (app.name()?, need_ids(&ids)?);
            let mut rows = Vec::new();
            let mut all = Vec::new();
            for id in ids {
                match client.lease(&app, &id).await {
                    Ok(env) => {
                        if let Some(l) = &env.data {
                            rows.push(vec![
                                id.clone(),
                                l.nonce.clone().unwrap_or_default(),
                                l.expires_at.to_string(),
                                l.owner.clone(),
                                l.description.clone(),
                            ]);
                        }
                        all.push(json!({ "machine": id, "lease": env.data }));
                    }
                    Err(e) if e.status().map(|s| s.as_u16()) == Some(404) => {
                        all.push(json!({ "machine": id, "lease": null }))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if as_json {
                output::json(&all)?;
            } else {
                output::table(
                    &["MACHINE", "NONCE", "EXPIRES AT", "OWNER", "DESCRIPTION"],
                    &rows,
                );
            }
        }
        MachineCmd::Leases(LeasesCmd::Clear { ids, app }) => {
            let (app, _) = (app.name()?, need_ids(&ids)?);
            for id in ids {
                match client.lease(&app, &id).await {
                    Ok(env) => {
                        let nonce = env.data.and_then(|l| l.nonce).unwrap_or_default();
                        client.release_lease(&app, &id, &nonce).await?;
                        println!("Cleared lease for {id}");
                    }
                    Err(e) if e.status().map(|s| s.as_u16()) == Some(404) => {
                        println!("No lease on {id}")
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        MachineCmd::Cordon { ids, app } | MachineCmd::Uncordon { ids, app } if ids.is_empty() => {
            let _ = app;
            bail!("give at least one machine ID");
        }
        MachineCmd::Cordon { ids, app } => {
            let app = app.name()?;
            for id in ids {
                client.action(&app, &id, "cordon", None).await?;
                println!("Machine {id} cordoned");
            }
        }
        MachineCmd::Uncordon { ids, app } => {
            let app = app.name()?;
            for id in ids {
                client.action(&app, &id, "uncordon", None).await?;
                println!("Machine {id} uncordoned");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
