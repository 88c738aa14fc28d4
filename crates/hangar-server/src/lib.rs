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
mod observed;
pub mod secrets;

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
}

/// A started server: where it listens, what bootstrap did, and how to stop it.
pub struct Server {
    pub api_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    pub bootstrap: Bootstrap,
    listener: TcpListener,
    http_listener: TcpListener,
    https_listener: TcpListener,
    proxy: hangar_proxy::ProxyConfig,
    autostop_interval: std::time::Duration,
    egress: Arc<hangar_proxy::Egress>,
    /// The embedded agent's supervisor, whose live instances the proxy routes to.
    supervisor: supervisor::Supervisor,
    state: AppState,
}

/// Every `interval`, stops (or suspends) what autostop finds idle, through the actors.
/// A machine gets at least one interval (and never less than a few seconds) after it
/// starts before autostop may take it: one woken for a request serves what follows it.
async fn autostop(
    supervisor: supervisor::Supervisor,
    load: Arc<hangar_proxy::Load>,
    primary_region: String,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    let instances = supervisor.instances();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let set = instances.borrow().clone();
        let min_age = interval.max(MIN_RUN);
        for d in hangar_proxy::autostop::pass(&set, &primary_region, |id| load.of(id), min_age) {
            tracing::info!(app = %d.app, machine = %d.machine_id, mode = ?d.mode, "autostop");
            let suspended = d.mode == hangar_proxy::AutostopMode::Suspend
                && supervisor
                    .send(&d.machine_id, |reply| supervisor::MachineCmd::Suspend {
                        reply,
                    })
                    .await
                    .is_ok();
            if !suspended {
                let _ = supervisor
                    .send(&d.machine_id, |reply| supervisor::MachineCmd::Stop {
                        signal: None,
                        timeout: None,
                        reply,
                    })
                    .await;
            }
        }
    }
}

/// How often running meters are counted into the store: at most this much is lost to
/// a crash.
const METER_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The least time a started machine runs before autostop may stop it.
const MIN_RUN: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts machines for the proxy through their actors.
struct ActorStarter(supervisor::Supervisor);

#[async_trait::async_trait]
impl hangar_proxy::Starter for ActorStarter {
    async fn start(&self, _app: &str, machine_id: &str) -> Result<(), String> {
        self.0
            .send(machine_id, |reply| supervisor::MachineCmd::Start { reply })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

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
        driver: Arc<dyn Driver>,
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
        let ledger_path = config.data_dir.join("agent.db");
        let (ledger, fresh) = hangar_agent::ledger::Ledger::open(&ledger_path)?;
        let supervisor = supervisor::Supervisor::new(
            ledger,
            Arc::new(observed::MachineCopy(store.clone())),
            driver,
            config.region.clone(),
            Arc::new(vault.clone()),
            meter.clone(),
        );
        if fresh {
            // Machines this host ran before its agent kept a store of its own.
            let known = store.call(|db| db.live_machines()).await?;
            supervisor.bring_in(&known).await?;
        }
        supervisor.take_charge().await?;
        meter.settle();
        let listener = TcpListener::bind(config.api_listen)
            .await
            .map_err(|error| ServerError::Listen {
                addr: config.api_listen,
                error,
            })?;
        let api_addr = listener.local_addr().map_err(ServerError::Serve)?;
        let http_listener = TcpListener::bind(config.http_listen)
            .await
            .map_err(|error| ServerError::Listen {
                addr: config.http_listen,
                error,
            })?;
        let http_addr = http_listener.local_addr().map_err(ServerError::Serve)?;
        let https_listener = TcpListener::bind(config.https_listen)
            .await
            .map_err(|error| ServerError::Listen {
                addr: config.https_listen,
                error,
            })?;
        let https_addr = https_listener.local_addr().map_err(ServerError::Serve)?;
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
        let state = AppState {
            store,
            agent: hangar_agent::api::Agent(Arc::new(supervisor.clone())),
            region: config.region.as_str().into(),
            idempotency: Arc::default(),
            edge,
            vault,
            deploys: deploy::Registry::default(),
            edge_ports: (http_addr.port(), https_addr.port()),
            builder: builds::Builder::new(config.registry_listen, &config.data_dir),
            meter,
            tokens: Arc::default(),
        };
        let interrupted = deploy::mark_interrupted(&state).await;
        if !interrupted.is_empty() {
            tokio::spawn(deploy::undo_all(state.clone(), interrupted));
        }
        Ok(Server {
            api_addr,
            http_addr,
            https_addr,
            bootstrap,
            listener,
            http_listener,
            https_listener,
            proxy: hangar_proxy::ProxyConfig {
                app_domain: config.app_domain.clone(),
                region: config.region.clone(),
                https_port: Some(https_addr.port()),
                response_timeout: config.proxy_response_timeout,
                queue_timeout: config.proxy_queue_timeout,
            },
            autostop_interval: config.autostop_interval,
            egress,
            supervisor,
            state,
        })
    }

    /// Serves the API until `shutdown` is cancelled, then finishes in-flight requests.
    /// Machines are left running.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        let load = self.supervisor.load();
        let meter = tokio::spawn(
            self.state
                .meter
                .clone()
                .run(METER_INTERVAL, shutdown.clone()),
        );
        tokio::spawn(autostop(
            self.supervisor.clone(),
            load.clone(),
            self.proxy.region.clone(),
            self.autostop_interval,
            shutdown.clone(),
        ));
        tokio::spawn(
            self.state
                .edge
                .clone()
                .renew_loop(std::time::Duration::from_secs(12 * 3600), shutdown.clone()),
        );
        let proxy = hangar_proxy::Proxy::new(
            self.proxy,
            self.supervisor.instances(),
            self.state.edge.addresses(),
            Arc::new(ActorStarter(self.supervisor.clone())),
            load,
            self.state.edge.cert_table(),
            self.egress.clone(),
        );
        let proxy =
            tokio::spawn(proxy.serve(self.http_listener, self.https_listener, shutdown.clone()));
        let app = api::router(self.state.clone());
        let stop = shutdown.clone();
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .map_err(ServerError::Serve);
        let _ = proxy.await;
        if is_root() {
            self.state.edge.unroute_v6_pool().await;
        }
        self.supervisor.shutdown().await;
        let _ = meter.await;
        result
    }
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
