//! `hangar server`: telemetry, flags, driver choice, bootstrap output, then serve until
//! SIGTERM or SIGINT. Machines keep running when the server exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use hangar_runtime::containerd::{self, ContainerdDriver, RegistryOptions};
use hangar_runtime::process::ProcessDriver;
use hangar_runtime::Driver;
use hangar_server::CancellationToken;
use hangar_server::{edge, Host, Server, ServerConfig};
use tracing::info;

pub use super::host_args::DriverArgs;
use crate::config::{self, CliConfig};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriverKind {
    /// The best driver this host can run
    Auto,
    /// Host processes (no isolation; for laptops and non-root hosts)
    Process,
    /// OCI images on containerd
    Containerd,
}

#[derive(Args)]
pub struct ServerArgs {
    /// Where state, logs and machine files live [default: $XDG_DATA_HOME/hangar]
    #[arg(long, env = "HANGAR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The control plane's database: sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DB
    /// [default: sqlite:<data-dir>/hangar.db]
    #[arg(long, env = "HANGAR_DATABASE")]
    pub database: Option<String>,
    /// Address of the Machines API
    #[arg(long, env = "HANGAR_API_LISTEN", default_value = "127.0.0.1:4280")]
    pub api_listen: SocketAddr,
    /// The region this host reports, and new machines' default region
    #[arg(long, env = "HANGAR_REGION", default_value = "local")]
    pub region: String,
    /// Where the edge proxy takes HTTP for apps
    #[arg(long, env = "HANGAR_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    /// Apps are reached at <app>.<app-domain>
    #[arg(long, env = "HANGAR_APP_DOMAIN", default_value = "localhost")]
    pub app_domain: String,
    /// How often autostop looks for idle machines (a Go duration)
    #[arg(long, env = "HANGAR_AUTOSTOP_INTERVAL", default_value = "5m")]
    pub autostop_interval: String,
    /// How often volumes are looked after: grown past their mount's
    /// extend_threshold_percent, given their daily snapshot, old snapshots expired (a Go
    /// duration)
    #[arg(long, env = "HANGAR_VOLUME_UPKEEP_INTERVAL", default_value = "1m")]
    pub volume_upkeep_interval: String,
    /// Where the edge proxy takes HTTPS for apps
    #[arg(long, env = "HANGAR_HTTPS_LISTEN", default_value = "127.0.0.1:8443")]
    pub https_listen: SocketAddr,
    /// How long a machine may take to begin answering a proxied request (a Go duration)
    #[arg(long, env = "HANGAR_PROXY_RESPONSE_TIMEOUT", default_value = "60s")]
    pub proxy_response_timeout: String,
    /// How long a request may queue while every machine of its app is at its hard limit,
    /// before it gets a 503 (a Go duration)
    #[arg(long, env = "HANGAR_PROXY_QUEUE_TIMEOUT", default_value = "30s")]
    pub proxy_queue_timeout: String,
    /// Dedicated IPv4 addresses for apps come from here
    #[arg(long, env = "HANGAR_IP_POOL_V4", default_value = "127.0.1.0/24")]
    pub ip_pool_v4: String,
    /// IPv6 addresses for apps come from here (made local to this host when run as root)
    #[arg(
        long,
        env = "HANGAR_IP_POOL_V6",
        default_value = "fd68:616e:6761:72::/64"
    )]
    pub ip_pool_v6: String,
    /// The ACME directory that issues certificates for custom hostnames
    #[arg(
        long,
        env = "HANGAR_ACME_DIRECTORY",
        default_value = "https://acme-v02.api.letsencrypt.org/directory"
    )]
    pub acme_directory: String,
    /// A PEM root certificate to trust for the ACME directory (a test CA)
    #[arg(long, env = "HANGAR_ACME_CA_ROOT")]
    pub acme_ca_root: Option<PathBuf>,
    /// The contact email of the ACME account
    #[arg(long, env = "HANGAR_ACME_EMAIL")]
    pub acme_email: Option<String>,
    /// The ACME challenge tried first; HTTP-01 is the fallback
    #[arg(
        long,
        env = "HANGAR_ACME_CHALLENGE",
        value_enum,
        default_value = "tls-alpn-01"
    )]
    pub acme_challenge: AcmeChallenge,
    /// Where the platform registry (Distribution) listens; builds push there
    #[arg(long, env = "HANGAR_REGISTRY_LISTEN", default_value = "127.0.0.1:5000")]
    pub registry_listen: SocketAddr,
    /// A price table (TOML, or JSON by extension) for `hangar billing`, instead of
    /// Fly's list prices
    #[arg(long, env = "HANGAR_PRICE_TABLE")]
    pub price_table: Option<std::path::PathBuf>,
    /// How much of a host's memory machines may be given, as a ratio: 1.0 places
    /// machines until their guest memory adds up to the host's, 2.0 to twice that
    #[arg(long, env = "HANGAR_MEMORY_OVERCOMMIT", default_value_t = 1.0)]
    pub memory_overcommit: f64,
    /// What WireGuard peer configs give as the gateway's `Endpoint` (HOST:PORT, a
    /// name or address peers can reach); without it, the host the CLI reached the API
    /// at, with --wireguard-port
    #[arg(long, env = "HANGAR_WIREGUARD_ENDPOINT", value_name = "HOST:PORT")]
    pub wireguard_endpoint: Option<String>,
    #[command(flatten)]
    pub machines: DriverArgs,
    /// Run no agent in this process: machines run on an agent of its own
    /// (`hangar agent --control URL`), which registers with HANGAR_AGENT_TOKEN and runs
    /// the host's proxy (then --http-listen/--https-listen name the agent's)
    #[arg(long, env = "HANGAR_REMOTE_AGENT")]
    pub remote_agent: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AcmeChallenge {
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
    #[value(name = "http-01")]
    Http01,
}

pub(crate) fn init_tracing() {
    let asked = std::env::var("HANGAR_LOG").unwrap_or_else(|_| "info".into());
    // The DNS server library logs every query at info: a line per lookup of every
    // machine drowns the log (and costs a write per query) unless asked for by name.
    let quiet = if asked.contains("hickory") {
        String::new()
    } else {
        ",hickory_server=warn,hickory_proto=warn,hickory_resolver=warn".into()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{asked}{quiet}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info{quiet}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Why containerd cannot run here, if it cannot.
fn containerd_unavailable(args: &DriverArgs) -> Option<String> {
    if args.containerd_socket.is_some() {
        return None;
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root".into());
    }
    for bin in ["containerd", "runc"] {
        if which(bin).is_none() {
            return Some(format!("`{bin}` is not installed"));
        }
    }
    None
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(bin))
                .find(|f| f.is_file())
        })
        .unwrap_or(None)
}

pub(crate) async fn choose_driver(
    args: &DriverArgs,
    data_dir: &std::path::Path,
) -> Result<Arc<dyn Driver>> {
    let exe = std::env::current_exe().context("find the hangar binary for the machine shim")?;
    let use_containerd = match args.driver {
        DriverKind::Process => {
            info!(driver = "process", "driver chosen by --driver");
            false
        }
        DriverKind::Containerd => match containerd_unavailable(args) {
            Some(why) => bail!("cannot use the containerd driver: {why}; run as root with containerd and runc installed, or use --driver process"),
            None => true,
        },
        DriverKind::Auto => match containerd_unavailable(args) {
            Some(why) => {
                info!(driver = "process", reason = %why, "driver chosen automatically: containerd cannot run here");
                false
            }
            None => {
                info!(driver = "containerd", "driver chosen automatically: running as root with containerd and runc installed");
                true
            }
        },
    };
    if !use_containerd {
        return Ok(Arc::new(ProcessDriver::new(data_dir.join("machines"), exe)));
    }
    let dir = data_dir.join("containerd");
    let daemon = match &args.containerd_socket {
        Some(socket) => containerd::daemon::connect(socket).await?,
        None => {
            let binary = which("containerd").context("find containerd")?;
            let daemon = containerd::daemon::start_private(&dir, &binary).await?;
            tokio::spawn(containerd::daemon::watch(dir.clone(), binary));
            daemon
        }
    };
    info!(socket = %daemon.socket.display(), version = %daemon.version, "connected to containerd");
    let driver = ContainerdDriver::new(
        daemon.channel,
        dir,
        exe,
        RegistryOptions {
            insecure: args.insecure_registries.clone(),
        },
    )
    .await?;
    Ok(Arc::new(driver))
}

/// A `--region` value as a region code, or an error saying what one looks like.
pub(crate) fn region_code(given: &str) -> Result<String> {
    let region = given.trim().to_ascii_lowercase();
    if region.is_empty() || !region.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("invalid --region {given:?}: use a region code such as \"ord\"");
    }
    Ok(region)
}

/// A Go duration flag's value; the error names the flag.
pub(crate) fn go_duration(flag: &str, value: &str) -> Result<std::time::Duration> {
    Ok(hangar_types::GoDuration::parse(value)
        .map_err(|e| anyhow::anyhow!("invalid --{flag}: {e}"))?
        .0)
}

/// The shortest autostop interval and proxy response timeout taken.
pub(crate) const SHORTEST: std::time::Duration = std::time::Duration::from_millis(100);

pub async fn run(args: ServerArgs) -> Result<()> {
    init_tracing();
    let region = region_code(&args.region)?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(config::default_data_dir);
    let database: hangar_server::Database = match &args.database {
        Some(url) => url.parse().map_err(|e| anyhow::anyhow!("{e}"))?,
        None => hangar_server::Database::Sqlite(data_dir.join("hangar.db")),
    };
    // Checked before anything is written.
    args.machines.volume_settings()?;
    let master_key = std::env::var("HANGAR_MASTER_KEY").ok();
    if matches!(database, hangar_server::Database::Postgres(_)) && master_key.is_none() {
        bail!("{}", hangar_server::ServerError::SharedKeyNeeded);
    }
    let leadership = match &database {
        hangar_server::Database::Postgres(url) => Some(lead(url.clone()).await?),
        hangar_server::Database::Sqlite(_) => None,
    };
    let store = hangar_server::open_store(database.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let host = if args.remote_agent {
        let token = agent_token().context("--remote-agent")?;
        Host::Remote { token }
    } else {
        Host::Embedded(choose_driver(&args.machines, &data_dir).await?)
    };
    let cfg = server_config(&args, &data_dir, &region, master_key)?;
    let server = Server::start(cfg, store, host)
        .await
        .context("start hangar server")?;
    let api_url = format!("http://{}", server.api_addr);
    info!(api = %api_url, data_dir = %data_dir.display(), database = %database, region = %region, "hangar server listening");
    announce(&server, &api_url, &args)?;
    serve_until_stopped(server, leadership).await?;
    info!("hangar server stopped");
    Ok(())
}

/// `HOST:PORT` as a peer's config gives it (`[IPv6]:PORT` for an IPv6 address).
fn wireguard_endpoint(e: &str) -> Result<String> {
    let e = e.trim();
    let port = e.rsplit_once(':').and_then(|(host, port)| {
        let bare_v6 = host.contains(':') && !host.starts_with('[');
        (!host.is_empty() && !bare_v6)
            .then_some(port)?
            .parse::<u16>()
            .ok()
    });
    match port {
        Some(p) if p > 0 => Ok(e.to_string()),
        _ => bail!("invalid --wireguard-endpoint {e:?}: give HOST:PORT, such as gw.example.com:51820 or [2001:db8::1]:51820"),
    }
}

/// The server's settings from its flags; the error names a flag whose value is wrong.
fn server_config(
    args: &ServerArgs,
    data_dir: &std::path::Path,
    region: &str,
    master_key: Option<String>,
) -> Result<ServerConfig> {
    Ok(ServerConfig {
        data_dir: data_dir.to_path_buf(),
        api_listen: args.api_listen,
        region: region.to_string(),
        admin_token: std::env::var("HANGAR_ADMIN_TOKEN").ok(),
        http_listen: args.http_listen,
        autostop_interval: go_duration("autostop-interval", &args.autostop_interval)?.max(SHORTEST),
        volume_upkeep_interval: go_duration(
            "volume-upkeep-interval",
            &args.volume_upkeep_interval,
        )?
        .max(SHORTEST),
        app_domain: args.app_domain.trim_matches('.').to_ascii_lowercase(),
        https_listen: args.https_listen,
        proxy_response_timeout: go_duration(
            "proxy-response-timeout",
            &args.proxy_response_timeout,
        )?
        .max(SHORTEST),
        proxy_queue_timeout: go_duration("proxy-queue-timeout", &args.proxy_queue_timeout)?,
        ip_pools: edge::Pools::parse(&args.ip_pool_v4, &args.ip_pool_v6)
            .map_err(|e| anyhow::anyhow!(e))?,
        acme: edge::AcmeSettings {
            config: edge::AcmeConfig {
                directory: args.acme_directory.clone(),
                root: args.acme_ca_root.clone(),
                contact: args.acme_email.clone(),
                state_dir: data_dir.join("certs").join("acme"),
            },
            method: match args.acme_challenge {
                AcmeChallenge::TlsAlpn01 => edge::AcmeMethod::TlsAlpn01,
                AcmeChallenge::Http01 => edge::AcmeMethod::Http01,
            },
        },
        master_key,
        wireguard: args.machines.gateway_settings(data_dir),
        wireguard_endpoint: match &args.wireguard_endpoint {
            Some(e) => Some(wireguard_endpoint(e)?),
            None => None,
        },
        registry_listen: args.registry_listen,
        prices: price_table(args.price_table.as_deref())?,
        memory_overcommit: overcommit("memory-overcommit", args.memory_overcommit)?,
        volumes: args.machines.volume_settings()?,
        dns: args.machines.dns_settings(),
    })
}

/// The overcommit ratio, checked: a positive number of at most 100.
pub(crate) fn overcommit(flag: &str, ratio: f64) -> Result<f64> {
    if ratio.is_finite() && ratio > 0.0 && ratio <= 100.0 {
        Ok(ratio)
    } else {
        anyhow::bail!(
            "--{flag} must be a ratio above 0 and at most 100, such as 1.0 or 1.5; got {ratio}"
        )
    }
}

/// Tells the operator what they need: the admin token of a first start (and the CLI
/// configured with it), where the API listens, and where apps are served.
fn announce(server: &Server, api_url: &str, args: &ServerArgs) -> Result<()> {
    if let Some(token) = &server.bootstrap.admin_token {
        println!(
            "Admin token (shown once; also in {}):",
            server.bootstrap.admin_token_file.display()
        );
        println!("  {token}");
        let written = config::write_if_absent(&CliConfig {
            api_url: Some(api_url.to_string()),
            access_token: Some(token.clone()),
        })?;
        if let Some(path) = written {
            println!(
                "CLI configured in {}: try `hangar apps list`",
                path.display()
            );
        }
    }
    println!("Hangar API listening on {api_url}");
    if args.remote_agent {
        println!(
            "Machines run on an agent of their own: start `hangar agent --control {api_url}` with the same HANGAR_AGENT_TOKEN"
        );
    } else {
        println!(
            "Apps are served at http://<app>.{domain}:{} and https://<app>.{domain}:{} (trust `hangar certs ca` for HTTPS)",
            server.http_addr.port(),
            server.https_addr.port(),
            domain = args.app_domain.trim_matches('.'),
        );
    }
    Ok(())
}

/// Serves until SIGTERM or SIGINT, or until another control plane takes over the
/// database (an error then).
async fn serve_until_stopped(
    server: Server,
    leadership: Option<hangar_server::Leadership>,
) -> Result<()> {
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested; finishing in-flight requests, leaving machines running");
        trigger.cancel();
    });
    let lost = leadership.map(|l| tokio::spawn(keep_lead(l, shutdown.clone())));
    server.serve(shutdown).await?;
    if let Some(lost) = lost {
        if lost.await.unwrap_or(false) {
            bail!("another control plane took over this database; this one stopped serving");
        }
    }
    Ok(())
}

/// Waits until this server is the active control plane of its PostgreSQL database;
/// while another is, this one is a hot standby and says so once.
async fn lead(url: String) -> Result<hangar_server::Leadership> {
    tokio::task::spawn_blocking(move || {
        hangar_server::Leadership::acquire(&url, |why| {
            info!("{why}");
            println!("Standing by: {why}");
        })
    })
    .await?
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Checks every two seconds that this server still leads; when another took over
/// (after a loss of PostgreSQL), stops serving. Returns whether it lost.
async fn keep_lead(mut leadership: hangar_server::Leadership, shutdown: CancellationToken) -> bool {
    let mut unreachable = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
        let Ok((back, lead)) = tokio::task::spawn_blocking(move || {
            let lead = leadership.check();
            (leadership, lead)
        })
        .await
        else {
            return false;
        };
        leadership = back;
        match lead {
            hangar_server::Lead::Held => {
                if std::mem::take(&mut unreachable) {
                    info!("PostgreSQL is back; still the active control plane");
                }
            }
            hangar_server::Lead::Unreachable(why) => {
                if !std::mem::replace(&mut unreachable, true) {
                    tracing::warn!(error = %why, "PostgreSQL unreachable; machines keep running, API writes fail until it returns");
                }
            }
            hangar_server::Lead::Lost => {
                tracing::error!("another control plane took over this database; stopping");
                shutdown.cancel();
                return true;
            }
        }
    }
}

/// The secret a control plane and its agents share (`HANGAR_AGENT_TOKEN`).
pub(crate) fn agent_token() -> Result<String> {
    match std::env::var("HANGAR_AGENT_TOKEN") {
        Ok(t) if t.trim().len() >= 16 => Ok(t.trim().to_string()),
        Ok(_) => bail!("HANGAR_AGENT_TOKEN is too short: give at least 16 characters, the same to the server and its agents (e.g. `openssl rand -hex 32`)"),
        Err(_) => bail!("set HANGAR_AGENT_TOKEN, a secret the server and its agents share (e.g. `openssl rand -hex 32`)"),
    }
}

pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The operator's price table, or Fly's list prices; an error naming the file and the
/// problem.
fn price_table(path: Option<&std::path::Path>) -> Result<hangar_types::billing::PriceTable> {
    let Some(path) = path else {
        return Ok(hangar_types::billing::PriceTable::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("read the price table {}: {e}", path.display()))?;
    let table: hangar_types::billing::PriceTable = if path.extension().is_some_and(|e| e == "json")
    {
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{e}"))
    } else {
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{e}"))
    }
    .map_err(|e| anyhow::anyhow!("the price table {} is not valid: {e}", path.display()))?;
    table
        .validate()
        .map_err(|e| anyhow::anyhow!("the price table {}: {e}", path.display()))?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wireguard_endpoints_need_a_host_and_a_port() {
        for ok in [
            "gw.example.com:51820",
            "10.0.0.1:4500",
            "[2001:db8::1]:51820",
        ] {
            assert_eq!(wireguard_endpoint(ok).unwrap(), ok);
        }
        for bad in ["gw.example.com", ":51820", "2001:db8::1", "gw:0", "gw:big"] {
            let e = wireguard_endpoint(bad).unwrap_err().to_string();
            assert!(e.contains("--wireguard-endpoint"), "{bad}: {e}");
        }
    }
}
