//! The Hangar control plane: the Machines API over HTTP, authentication, idempotency,
//! apps and releases, the deployer, builds, secrets, the edge's control side and
//! billing. Machines themselves are the agent's (`hangar-agent`): the control plane
//! sends their commands through the agent's typed interface (`hangar_agent::api`), to
//! the agent embedded in this process.
//!
//! [`Server::start`] bootstraps the `personal` org and the admin token on first start,
//! has the agent take charge of every stored machine (adopting the ones still running),
//! and serves the API until shutdown. It does not parse command lines or
//! write CLI config files; the `hangar` binary does that.

pub mod api;
pub mod auth;
pub mod billing;
mod bootstrap;
pub mod builds;
pub mod deploy;
pub mod edge;
pub mod fleet;
pub mod ids;
mod listen;
mod observed;
pub mod placement;
pub mod secrets;
pub mod volumes;
pub mod wireguard;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hangar_runtime::Driver;
use hangar_store::Store;
use tokio::net::TcpListener;

pub use bootstrap::Bootstrap;
/// The host's agent, embedded: the supervisor and its clock are the agent's.
pub use hangar_agent::{clock, supervisor};
pub use hangar_store::{Database, Lead, Leadership};
pub use tokio_util::sync::CancellationToken;

/// Everything `hangar server` needs, with defaults filled in by the caller.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub api_listen: SocketAddr,
    /// The region this host reports, and the default region of new machines.
    pub region: String,
    /// Used instead of a generated admin token on first start.
    pub admin_token: Option<String>,
    /// Where the edge proxy takes HTTP for apps.
    pub http_listen: SocketAddr,
    /// Apps are reached at `<app>.<app_domain>`.
    pub app_domain: String,
    /// How often autostop looks for idle machines.
    pub autostop_interval: std::time::Duration,
    /// How often volumes are looked after: auto-extend, daily snapshots and their expiry
    /// (`volumes::upkeep`).
    pub volume_upkeep_interval: std::time::Duration,
    /// Where the edge proxy takes HTTPS for apps.
    pub https_listen: SocketAddr,
    /// How long a machine may take to begin answering a proxied request.
    pub proxy_response_timeout: std::time::Duration,
    /// How long a proxied request may queue while every machine is at its hard limit.
    pub proxy_queue_timeout: std::time::Duration,
    /// Pools of dedicated app addresses.
    pub ip_pools: edge::Pools,
    /// The ACME CA for custom hostnames, and the challenge tried first.
    pub acme: edge::AcmeSettings,
    /// The master key secrets are sealed with (`HANGAR_MASTER_KEY`); without it, a key
    /// file in the data dir, made on first start.
    pub master_key: Option<String>,
    /// Where the platform registry (Distribution) listens once a build needs it.
    pub registry_listen: SocketAddr,
    /// What usage costs (Fly's list prices unless the operator gives a table).
    pub prices: hangar_types::billing::PriceTable,
    /// How much of a host's memory placement gives machines, as a ratio (1.0: all).
    pub memory_overcommit: f64,
    /// How this host keeps volumes: overcommit, encryption at rest, where snapshots go.
    pub volumes: hangar_agent::volumes::VolumeSettings,
    /// Where machines' private DNS sends public names.
    pub dns: hangar_agent::dns::DnsSettings,
    /// Where this host's WireGuard gateway listens (with an agent in this process).
    pub wireguard: hangar_agent::gateway::GatewaySettings,
    /// What peer configs give as the gateway's endpoint; `None`: the host the API was
    /// reached at, with the gateway's port.
    pub wireguard_endpoint: Option<String>,
}

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// The host's agent, through its typed interface.
    pub agent: hangar_agent::api::Agent,
    pub region: Arc<str>,
    pub idempotency: Arc<api::idempotency::KeyLocks>,
    pub edge: Arc<edge::Edge>,
    pub vault: secrets::Vault,
    /// Deploys under way and their progress.
    pub deploys: deploy::Registry,
    /// The edge proxy's HTTP and HTTPS ports, for the app URLs deploys print.
    pub edge_ports: (u16, u16),
    /// Image builds and the platform registry.
    pub builder: builds::Builder,
    /// Usage metered for billing.
    pub meter: Arc<billing::Meter>,
    /// Tokens found recently.
    pub tokens: Arc<auth::TokenCache>,
    /// With an agent in a process of its own: the link to it, which it fills in when
    /// it registers, and the token it shows.
    pub remote_agent: Option<hangar_agent::remote::client::RemoteAgent>,
    pub agent_token: Option<Arc<str>>,
    /// The hosts new machines are placed on.
    pub placement: Arc<placement::Placement>,
    /// WireGuard peers: where their configs say the gateway is.
    pub peers: Arc<wireguard::PeerBook>,
}

/// Where this control plane's machines run.
pub enum Host {
    /// An agent in this process, over this driver.
    Embedded(Arc<dyn Driver>),
    /// An agent in a process of its own (`hangar agent --control URL`) that registers
    /// with the token given; this process runs no proxy.
    Remote { token: String },
}

/// A started server: where it listens, what bootstrap did, and how to stop it.
pub struct Server {
    pub api_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    pub bootstrap: Bootstrap,
    listener: TcpListener,
    http_listener: Option<TcpListener>,
    https_listener: Option<TcpListener>,
    proxy: hangar_proxy::ProxyConfig,
    autostop_interval: std::time::Duration,
    egress: Arc<hangar_proxy::Egress>,
    /// The embedded agent's supervisor, whose live instances the proxy routes to; none
    /// with a remote agent (which runs the host's proxy itself).
    supervisor: Option<supervisor::Supervisor>,
    state: AppState,
}

/// How often running meters are counted into the store: at most this much is lost to
/// a crash.
const METER_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("create data dir {path}: {error}")]
    DataDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("open store: {0}")]
    Store(#[from] hangar_store::StoreError),
    #[error("listen on {addr}: {error} (is another hangar server running? choose another address with --api-listen)")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("serve API: {0}")]
    Serve(std::io::Error),
    #[error("edge: {0}")]
    Edge(#[from] edge::EdgeError),
    #[error("master key: {0}")]
    MasterKey(#[from] secrets::KeyError),
    #[error("{0}")]
    Agent(#[from] hangar_agent::ledger::LedgerError),
    /// Volumes cannot be kept as configured (a snapshot bucket without credentials).
    #[error("{0}")]
    Volumes(String),
    #[error("with --database postgres://… set HANGAR_MASTER_KEY, the same on every control plane of that database (a key file under one server's data dir would leave the others unable to open secrets)")]
    SharedKeyNeeded,
}

/// Opens the control plane's database (and, for SQLite, holds it for this server alone),
/// bringing its schema up to date. Done before anything else starts, so a wrong
/// `--database` fails at once and leaves nothing behind.
pub async fn open_store(database: hangar_store::Database) -> Result<Store, ServerError> {
    if let hangar_store::Database::Sqlite(path) = &database {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|error| ServerError::DataDir {
                path: dir.to_path_buf(),
                error,
            })?;
        }
    }
    tokio::task::spawn_blocking(move || Store::connect(&database))
        .await
        .map_err(|e| hangar_store::StoreError::Task(e.to_string()))?
        .map_err(ServerError::Store)
}

impl Server {
    /// Bootstraps the store [`open_store`] opened, reconciles machines with the driver
    /// and binds the API listener. Serving starts with [`Server::serve`].
    pub async fn start(
        config: ServerConfig,
        store: Store,
        host: Host,
    ) -> Result<Server, ServerError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|error| ServerError::DataDir {
            path: config.data_dir.clone(),
            error,
        })?;
        if store.dialect() == hangar_store::Dialect::Postgres && config.master_key.is_none() {
            return Err(ServerError::SharedKeyNeeded);
        }
        let bootstrap = bootstrap::run(&store, &config).await?;
        let master_key = secrets::MasterKey::load(config.master_key.as_deref(), &config.data_dir)?;
        let vault = secrets::Vault::new(store.clone(), master_key);
        let egress = Arc::new(hangar_proxy::Egress::default());
        let meter =
            billing::Meter::load(store.clone(), config.prices.clone(), egress.clone()).await?;
        let host = connect_agent(&config, &store, host, &vault, &meter).await?;
        meter.settle();
        let listeners = listen(&config, host.supervisor.is_some()).await?;
        let (http_addr, https_addr) = (listeners.http_addr, listeners.https_addr);
        let edge = start_edge(&config, &store, http_addr).await?;
        if let Some(supervisor) = &host.supervisor {
            supervisor.follow_app_addresses(edge.addresses());
        }
        let placement = Arc::new(placement::Placement::new(config.memory_overcommit));
        if host.supervisor.is_some() {
            let id = hangar_agent::host::host_id(&config.data_dir).map_err(|error| {
                ServerError::DataDir {
                    path: config.data_dir.clone(),
                    error,
                }
            })?;
            placement.host_seen(placement::Host {
                id,
                region: config.region.clone(),
                capacity: hangar_agent::host::HostCapacity::measure(),
            });
        }
        let state = AppState {
            store,
            agent: host.agent,
            region: config.region.as_str().into(),
            idempotency: Arc::default(),
            edge,
            vault,
            deploys: deploy::Registry::default(),
            edge_ports: (http_addr.port(), https_addr.port()),
            builder: builds::Builder::new(config.registry_listen, &config.data_dir),
            meter,
            tokens: Arc::default(),
            remote_agent: host.remote_agent,
            agent_token: host.agent_token,
            placement,
            peers: Arc::new(wireguard::PeerBook::new(config.wireguard_endpoint.clone())),
        };
        tokio::spawn(wireguard::resume(state.clone()));
        tokio::spawn(volumes::upkeep::run(
            state.clone(),
            config.volume_upkeep_interval,
        ));
        let interrupted = deploy::mark_interrupted(&state).await;
        if !interrupted.is_empty() {
            tokio::spawn(deploy::undo_all(state.clone(), interrupted));
        }
        Ok(Server {
            api_addr: listeners.api_addr,
            http_addr,
            https_addr,
            bootstrap,
            listener: listeners.api,
            http_listener: listeners.http,
            https_listener: listeners.https,
            proxy: hangar_proxy::ProxyConfig {
                app_domain: config.app_domain.clone(),
                region: config.region.clone(),
                https_port: Some(https_addr.port()),
                response_timeout: config.proxy_response_timeout,
                queue_timeout: config.proxy_queue_timeout,
            },
            autostop_interval: config.autostop_interval,
            egress,
            supervisor: host.supervisor,
            state,
        })
    }

    /// The API as a service, for driving it in-process (tests).
    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Serves the API until `shutdown` is cancelled, then finishes in-flight requests.
    /// Machines are left running.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        let meter = tokio::spawn(
            self.state
                .meter
                .clone()
                .run(METER_INTERVAL, shutdown.clone()),
        );
        tokio::spawn(
            self.state
                .edge
                .clone()
                .renew_loop(std::time::Duration::from_secs(12 * 3600), shutdown.clone()),
        );
        let listeners = self.http_listener.zip(self.https_listener);
        let proxy = self
            .supervisor
            .as_ref()
            .zip(listeners)
            .map(|(supervisor, (http, https))| {
                tokio::spawn(hangar_agent::traffic::autostop(
                    supervisor.clone(),
                    self.proxy.region.clone(),
                    self.autostop_interval,
                    shutdown.clone(),
                ));
                let proxy = hangar_proxy::Proxy::new(
                    self.proxy.clone(),
                    supervisor.instances(),
                    self.state.edge.addresses(),
                    Arc::new(hangar_agent::traffic::ActorStarter(supervisor.clone())),
                    supervisor.load(),
                    self.state.edge.cert_table(),
                    self.egress.clone(),
                );
                tokio::spawn(proxy.serve(http, https, shutdown.clone()))
            });
        let app = api::router(self.state.clone());
        let result = listen::serve(self.listener, app, shutdown.clone())
            .await
            .map_err(ServerError::Serve);
        if let Some(proxy) = proxy {
            let _ = proxy.await;
        }
        if is_root() {
            self.state.edge.unroute_v6_pool().await;
        }
        if let Some(supervisor) = &self.supervisor {
            supervisor.shutdown().await;
        }
        let _ = meter.await;
        result
    }
}

/// The control plane's side of the host's agent.
struct HostAgent {
    agent: hangar_agent::api::Agent,
    /// The embedded agent's supervisor; none with a remote agent.
    supervisor: Option<supervisor::Supervisor>,
    /// With a remote agent: the link to it and the token it shows.
    remote_agent: Option<hangar_agent::remote::client::RemoteAgent>,
    agent_token: Option<Arc<str>>,
}

/// Connects the control plane to the host's agent: one started in this process, or
/// the link a remote agent registers on.
async fn connect_agent(
    config: &ServerConfig,
    store: &Store,
    host: Host,
    vault: &secrets::Vault,
    meter: &Arc<billing::Meter>,
) -> Result<HostAgent, ServerError> {
    Ok(match host {
        Host::Embedded(driver) => {
            let supervisor = embedded_agent(config, store, driver, vault, meter.clone()).await?;
            HostAgent {
                agent: hangar_agent::api::Agent(Arc::new(supervisor.clone())),
                supervisor: Some(supervisor),
                remote_agent: None,
                agent_token: None,
            }
        }
        Host::Remote { token } => {
            // Until the agent's changes arrive, machines are as the copy has them.
            for m in store.call(|db| db.live_machines()).await? {
                hangar_agent::Observer::machine(meter.as_ref(), &m);
            }
            let link = hangar_agent::remote::client::RemoteAgent::new(&token);
            HostAgent {
                agent: hangar_agent::api::Agent(Arc::new(link.clone())),
                supervisor: None,
                remote_agent: Some(link),
                agent_token: Some(token.as_str().into()),
            }
        }
    })
}

/// The sockets a server listens on, bound.
struct Listeners {
    api: TcpListener,
    api_addr: SocketAddr,
    http: Option<TcpListener>,
    http_addr: SocketAddr,
    https: Option<TcpListener>,
    https_addr: SocketAddr,
}

/// Binds the API listener and, when the proxy runs in this process, the proxy's.
/// A remote agent runs the host's proxy: its addresses are the configured ones.
async fn listen(config: &ServerConfig, proxy_here: bool) -> Result<Listeners, ServerError> {
    let api = TcpListener::bind(config.api_listen)
        .await
        .map_err(|error| ServerError::Listen {
            addr: config.api_listen,
            error,
        })?;
    let api_addr = api.local_addr().map_err(ServerError::Serve)?;
    let (http, http_addr) = if proxy_here {
        bind(config.http_listen).await?
    } else {
        (None, config.http_listen)
    };
    let (https, https_addr) = if proxy_here {
        bind(config.https_listen).await?
    } else {
        (None, config.https_listen)
    };
    Ok(Listeners {
        api,
        api_addr,
        http,
        http_addr,
        https,
        https_addr,
    })
}

/// The edge's control side: apps' shared address beside the proxy's HTTP one, the v6
/// pool routed (as root), and the edge's stored state taken charge of.
async fn start_edge(
    config: &ServerConfig,
    store: &Store,
    http_addr: SocketAddr,
) -> Result<Arc<edge::Edge>, ServerError> {
    let shared_v4 = match http_addr.ip() {
        ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip => ip,
    };
    let edge = edge::Edge::new(
        store.clone(),
        edge::EdgeConfig {
            pools: config.ip_pools.clone(),
            shared_v4,
            app_domain: config.app_domain.clone(),
            data_dir: config.data_dir.clone(),
            acme: config.acme.clone(),
        },
    )?;
    if is_root() {
        edge.route_v6_pool().await;
    }
    edge.take_charge().await?;
    Ok(edge)
}

/// The host's agent in this process: its own store beside the control plane's data,
/// its changes copied into the control plane's store, its secrets from the vault.
async fn embedded_agent(
    config: &ServerConfig,
    store: &Store,
    driver: Arc<dyn Driver>,
    vault: &secrets::Vault,
    meter: Arc<billing::Meter>,
) -> Result<supervisor::Supervisor, ServerError> {
    let ledger_path = config.data_dir.join("agent.db");
    let (ledger, fresh) = hangar_agent::ledger::Ledger::open(&ledger_path)?;
    let volumes =
        hangar_agent::volumes::Volumes::loopback(config.data_dir.join("volumes"), &config.volumes)
            .map_err(|e| ServerError::Volumes(e.to_string()))?;
    volumes.mount_all().await;
    // Encrypted volumes get their keys before any machine starts on them.
    for op in volumes::keys::unlocks(store, vault, None).await {
        if let Err(e) = volumes.apply(&op).await {
            tracing::error!(error = %e, "volume cannot be unlocked");
        }
    }
    let supervisor = supervisor::Supervisor::new(
        ledger,
        Arc::new(observed::MachineCopy(store.clone())),
        driver,
        config.region.clone(),
        Arc::new(vault.clone()),
        meter,
        volumes,
    );
    if fresh {
        // Machines this host ran before its agent kept a store of its own.
        let known = store.call(|db| db.live_machines()).await?;
        supervisor.bring_in(&known).await?;
    }
    supervisor.serve_private_dns(&config.dns);
    supervisor.serve_wireguard(&config.wireguard);
    supervisor.take_charge().await?;
    Ok(supervisor)
}

async fn bind(addr: SocketAddr) -> Result<(Option<TcpListener>, SocketAddr), ServerError> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|error| ServerError::Listen { addr, error })?;
    let bound = l.local_addr().map_err(ServerError::Serve)?;
    Ok((Some(l), bound))
}

/// Whether this process runs as root (addresses outside loopback need it).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
