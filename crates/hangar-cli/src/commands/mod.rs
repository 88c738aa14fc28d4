//! The command tree, with flyctl's names, and the dispatch to each command's module.

mod agent;
mod appconfig;
mod apps;
mod auth;
mod billing;
mod build;
mod certs;
mod deploy;
mod doctor;
mod host_args;
mod ips;
mod launch;
mod logs;
mod machine;
mod open;
mod orgs;
mod ports;
mod progress;
mod proxy;
mod releases;
mod scale;
mod secrets;
mod server;
mod ssh;
mod status;
mod tokens;
mod version;
mod volumes;
mod wireguard;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hangar",
    version,
    about = "Hangar: the Fly.io workflow on machines you own"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the platform: the Machines API and the machine supervisor
    Server(Box<server::ServerArgs>),
    /// Run this host's agent alone, for a control plane started with --remote-agent
    Agent(agent::AgentArgs),
    /// Manage apps
    #[command(subcommand)]
    Apps(apps::AppsCmd),
    /// Manage machines
    #[command(subcommand, alias = "machines", alias = "m")]
    Machine(machine::MachineCmd),
    /// Show an app's logs, following them
    Logs(logs::LogsArgs),
    /// Forward a local port to a host on the app's private network
    Proxy(proxy::ProxyArgs),
    /// Open a shell or run a command in a machine
    #[command(subcommand)]
    Ssh(ssh::SshCmd),
    /// Log in and out, and show the current token and who it is
    #[command(subcommand)]
    Auth(auth::AuthCmd),
    /// Show what an org used this month, and what it costs
    Billing(billing::BillingArgs),
    /// Open the app's URL in a browser (printing it)
    Open(open::OpenArgs),
    /// Show this binary's version
    Version(version::VersionArgs),
    /// Manage an app's IP addresses
    #[command(subcommand)]
    Ips(ips::IpsCmd),
    /// Create, list and remove orgs
    #[command(subcommand, aliases = ["org", "organizations"])]
    Orgs(orgs::OrgsCmd),
    /// Show and narrow API tokens (offline)
    #[command(subcommand)]
    Tokens(tokens::TokensCmd),
    /// Manage WireGuard peers of an org's private network
    #[command(subcommand, alias = "wg")]
    Wireguard(wireguard::WireguardCmd),
    /// Manage an app's volumes
    #[command(subcommand, aliases = ["volume", "vol", "v"])]
    Volumes(volumes::VolumesCmd),
    /// Manage an app's hostnames and certificates
    #[command(subcommand)]
    Certs(certs::CertsCmd),
    /// Create an app from the current directory: write fly.toml, create the app, deploy
    Launch(launch::LaunchArgs),
    /// Build (or take) an image and deploy it with the app's fly.toml
    Deploy(deploy::DeployArgs),
    /// Manage app secrets
    #[command(subcommand)]
    Secrets(secrets::SecretsCmd),
    /// List releases, or roll back to one
    Releases(releases::ReleasesArgs),
    /// Show the app's release and machines
    Status(status::StatusArgs),
    /// Change how many machines run and how big they are
    #[command(subcommand)]
    Scale(scale::ScaleCmd),
    /// Validate, show and save fly.toml
    #[command(subcommand)]
    Config(appconfig::ConfigCmd),
    /// Check the app against a production checklist
    Doctor(doctor::DoctorArgs),
    /// Internal: supervise one machine process (started by the process driver)
    #[command(hide = true)]
    Shim(ShimArgs),
    /// Internal: write a container's output to its machine log (run by containerd)
    #[command(hide = true)]
    LogDriver(ShimArgs),
}

#[derive(Args)]
pub struct ShimArgs {
    pub dir: PathBuf,
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Server(a) => server::run(*a).await.map(|_| ExitCode::SUCCESS),
        Command::Agent(a) => agent::run(a).await.map(|_| ExitCode::SUCCESS),
        Command::Apps(c) => apps::run(c).await.map(|_| ExitCode::SUCCESS),
        Command::Machine(c) => machine::run(c).await,
        Command::Logs(a) => logs::run(a).await.map(|_| ExitCode::SUCCESS),
        Command::Proxy(a) => proxy::run(a).await.map(|_| ExitCode::SUCCESS),
        Command::Ssh(c) => ssh::run(c).await,
        Command::Auth(c) => auth::run(c).await.map(|_| ExitCode::SUCCESS),
        Command::Billing(a) => billing::run(a).await.map(|_| ExitCode::SUCCESS),
        Command::Open(a) => open::run(a).await.map(|_| ExitCode::SUCCESS),
        Command::Version(a) => version::run(a).map(|_| ExitCode::SUCCESS),
        Command::Ips(c) => ips::run(c).await.map(|_| ExitCode::SUCCESS),
        Command::Wireguard(c) => wireguard::run(c).await.map(|_| ExitCode::SUCCESS),
        Command::Tokens(c) => tokens::run(c).await.map(|_| ExitCode::SUCCESS),
        Command::Orgs(c) => orgs::run(c).await.map(|_| ExitCode::SUCCESS),
        Command::Volumes(c) => volumes::run(c).await.map(|_| ExitCode::SUCCESS),
        Command::Certs(c) => certs::run(c).await.map(|_| ExitCode::SUCCESS),
        Command::Launch(a) => launch::run(a).await.map(|_| ExitCode::SUCCESS),
        Command::Deploy(a) => deploy::run(a).await.map(|_| ExitCode::SUCCESS),
        Command::Secrets(c) => secrets::run(c).await.map(|_| ExitCode::SUCCESS),
        Command::Releases(a) => releases::run(a).await.map(|_| ExitCode::SUCCESS),
        Command::Status(a) => status::run(a).await.map(|_| ExitCode::SUCCESS),
        Command::Scale(c) => scale::run(c).await.map(|_| ExitCode::SUCCESS),
        Command::Config(c) => appconfig::run(c).await.map(|_| ExitCode::SUCCESS),
        Command::Doctor(a) => doctor::run(a).await.map(|_| ExitCode::SUCCESS),
        Command::Shim(_) | Command::LogDriver(_) => unreachable_shim(),
    }
}

fn unreachable_shim() -> Result<ExitCode> {
    bail!("the shim runs before the async runtime starts")
}

/// The app a command acts on, found as flyctl finds it: `-a/--app` (or `HANGAR_APP`),
/// else `FLY_APP`, else the `app` of the fly.toml that `-c/--config` names (by default
/// the one in the current directory).
#[derive(Args, Clone)]
pub struct AppArg {
    /// Application name (default: the app in fly.toml)
    #[arg(short = 'a', long = "app", env = "HANGAR_APP")]
    pub app: Option<String>,
    #[command(flatten)]
    pub config: appconfig::ConfigArg,
}

impl AppArg {
    /// An app named on the command line or in the environment, fly.toml aside.
    pub fn given(&self) -> Option<String> {
        self.app
            .clone()
            .or_else(|| std::env::var("FLY_APP").ok())
            .filter(|a| !a.trim().is_empty())
    }

    /// The app to act on: given, else from fly.toml.
    pub fn name(&self) -> Result<String> {
        if let Some(app) = self.given() {
            return Ok(app);
        }
        let path = self.config.path();
        if !path.is_file() {
            bail!(
                "no app given: pass -a APP, or run this where a fly.toml names the app (or point -c/--config at one; {} does not exist)",
                path.display()
            );
        }
        let loaded = hangar_appconfig::load(&path).map_err(|e| {
            anyhow::anyhow!(
                "no app given, and {} cannot be read for one: {e}",
                path.display()
            )
        })?;
        let app = loaded.config.app.trim().to_string();
        if app.is_empty() {
            bail!(
                "no app given: pass -a APP, or set app = \"...\" in {}",
                path.display()
            );
        }
        Ok(app)
    }
}

/// Asks before something destructive: `--yes` skips the question; without a terminal
/// the command refuses instead of waiting for an answer nobody can give.
pub fn confirm(question: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question} needs confirmation: pass --yes to do it without a prompt");
    }
    eprint!("{question} [y/N]: ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        bail!("cancelled")
    }
}

/// The app's started machines; none is an error that says what to do.
pub async fn started_machines(
    client: &hangar_client::Client,
    app: &str,
) -> Result<Vec<hangar_types::Machine>> {
    let started: Vec<_> = client
        .list_machines(app, false)
        .await?
        .into_iter()
        .filter(|m| m.state == "started")
        .collect();
    if started.is_empty() {
        bail!("{app} has no started machine: start one (`hangar machine start`) or check `hangar status -a {app}`");
    }
    Ok(started)
}

/// Asks which of `machines` to use (`-s/--select`); without a terminal the command
/// refuses, and `instead` says what to pass.
pub fn choose_machine(
    machines: Vec<hangar_types::Machine>,
    instead: &str,
) -> Result<hangar_types::Machine> {
    if !std::io::stdin().is_terminal() {
        bail!("--select asks which machine to use and needs a terminal: {instead}");
    }
    for (i, m) in machines.iter().enumerate() {
        eprintln!("  {}) {} ({}, {})", i + 1, m.id, m.region, m.name);
    }
    eprint!("Select a machine [1-{}]: ", machines.len());
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    let answer = answer.trim();
    answer
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|n| machines.into_iter().nth(n))
        .ok_or_else(|| anyhow::anyhow!("{answer:?} is not one of the machines listed"))
}
