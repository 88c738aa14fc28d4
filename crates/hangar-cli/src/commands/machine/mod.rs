//! `hangar machine ...`: run, clone, list, status, start, stop, restart, suspend,
//! destroy, update, wait, exec, leases, cordon, uncordon — flyctl's `fly machine`
//! commands.

mod clone;
mod create;
mod leases;
mod update;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use hangar_client::Client;
use hangar_types::requests::StopRequest;
use hangar_types::{GoDuration, Machine, Signal};

use super::{confirm, AppArg};
use crate::{config, output};

#[derive(Subcommand)]
pub enum MachineCmd {
    /// Create and start a machine
    Run(create::RunArgs),
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
    Update(update::UpdateArgs),
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
    Leases(leases::LeasesCmd),
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
        MachineCmd::Run(args) => create::run(&client, args).await?,
        MachineCmd::List { app, json } => list(&client, app, json).await?,
        MachineCmd::Status { id, app, json } => status(&client, &id, app, json).await?,
        MachineCmd::Start { ids, app } => start(&client, ids, app).await?,
        MachineCmd::Stop {
            ids,
            app,
            signal,
            timeout,
        } => stop(&client, ids, app, signal, timeout).await?,
        MachineCmd::Restart { ids, app } => restart(&client, ids, app).await?,
        MachineCmd::Suspend { ids, app } => suspend(&client, ids, app).await?,
        MachineCmd::Destroy {
            ids,
            app,
            force,
            yes,
        } => destroy(&client, ids, app, force, yes).await?,
        MachineCmd::Update(args) => update::run(&client, args).await?,
        MachineCmd::Wait {
            id,
            app,
            state,
            wait_timeout,
        } => wait(&client, &id, app, &state, &wait_timeout).await?,
        MachineCmd::Exec {
            id,
            command,
            app,
            timeout,
        } => return exec(&client, &id, &command, app, timeout).await,
        MachineCmd::Leases(cmd) => leases::run(&client, cmd).await?,
        MachineCmd::Cordon { ids, app } => {
            change_cordon(&client, ids, app, "cordon", "cordoned").await?
        }
        MachineCmd::Uncordon { ids, app } => {
            change_cordon(&client, ids, app, "uncordon", "uncordoned").await?
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(client: &Client, app: AppArg, json: bool) -> Result<()> {
    let list = client.list_machines(&app.name()?, false).await?;
    if json {
        output::json(&list)?;
    } else {
        output::table(&HEADERS, &list.iter().map(row).collect::<Vec<_>>());
    }
    Ok(())
}

/// One machine's row, then its events.
async fn status(client: &Client, id: &str, app: AppArg, json: bool) -> Result<()> {
    let m = client.get_machine(&app.name()?, id).await?;
    if json {
        return output::json(&m);
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
    Ok(())
}

async fn start(client: &Client, ids: Vec<String>, app: AppArg) -> Result<()> {
    let (app, _) = (app.name()?, need_ids(&ids)?);
    for id in ids {
        client.action(&app, &id, "start", None).await?;
        println!("{id} has been started");
    }
    Ok(())
}

async fn stop(
    client: &Client,
    ids: Vec<String>,
    app: AppArg,
    signal: Option<String>,
    timeout: Option<String>,
) -> Result<()> {
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
    Ok(())
}

/// Restarts each machine in turn, waiting for it to be started before the next.
async fn restart(client: &Client, ids: Vec<String>, app: AppArg) -> Result<()> {
    let (app, _) = (app.name()?, need_ids(&ids)?);
    for id in ids {
        client.action(&app, &id, "restart", None).await?;
        wait_for(client, &app, &id, "started", Duration::from_secs(120)).await?;
        println!("Machine {id} restarted successfully!");
    }
    Ok(())
}

async fn suspend(client: &Client, ids: Vec<String>, app: AppArg) -> Result<()> {
    let (app, _) = (app.name()?, need_ids(&ids)?);
    for id in ids {
        client.action(&app, &id, "suspend", None).await?;
        println!("{id} has been suspended");
    }
    Ok(())
}

async fn destroy(
    client: &Client,
    ids: Vec<String>,
    app: AppArg,
    force: bool,
    yes: bool,
) -> Result<()> {
    let (app, _) = (app.name()?, need_ids(&ids)?);
    confirm(&format!("Destroy machine(s) {}?", ids.join(", ")), yes)?;
    for id in ids {
        client.destroy_machine(&app, &id, force).await?;
        println!("machine {id} was found and is currently being destroyed");
    }
    Ok(())
}

async fn wait(
    client: &Client,
    id: &str,
    app: AppArg,
    state: &str,
    wait_timeout: &str,
) -> Result<()> {
    let overall = GoDuration::parse(wait_timeout)?.0;
    let reached = wait_for(client, &app.name()?, id, state, overall).await?;
    println!("Machine {id} reached state {reached}");
    Ok(())
}

/// Runs the command in the machine; the exit code is the command's.
async fn exec(
    client: &Client,
    id: &str,
    command: &str,
    app: AppArg,
    timeout: u64,
) -> Result<ExitCode> {
    let out = client
        .exec(&app.name()?, id, split(command, "command")?, Some(timeout))
        .await?;
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    Ok(ExitCode::from(out.exit_code.clamp(0, 255) as u8))
}

/// Cordons or uncordons machines (`action`), saying so of each (`done`). The machine
/// IDs are checked before the app is looked up.
async fn change_cordon(
    client: &Client,
    ids: Vec<String>,
    app: AppArg,
    action: &str,
    done: &str,
) -> Result<()> {
    need_ids(&ids)?;
    let app = app.name()?;
    for id in ids {
        client.action(&app, &id, action, None).await?;
        println!("Machine {id} {done}");
    }
    Ok(())
}
