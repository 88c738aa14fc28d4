//! An agent in a process of its own (`hangar agent --control URL`): this host's
//! machines, their store, the agent's interface over HTTP for the control plane, and
//! the host's edge proxy with autostart and autostop. It registers with the control
//! plane, sends it what it observes, takes secrets from it at start, and keeps the
//! proxy's address map and hostname table from it; when the control plane is away,
//! machines keep running and restarting, and the proxy keeps serving and waking them.
//!
//! What it does not do: the Machines API, apps, releases, deploys, builds or
//! certificate issuance (the control plane's), or usage metering (not yet for agents
//! of their own).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hangar_proxy::{CertTable, ProxyConfig};
use hangar_runtime::Driver;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ledger::{Ledger, LedgerError};
use crate::remote::control::{Control, Registration};
use crate::supervisor::Supervisor;
use crate::traffic;

/// Everything `hangar agent` needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub data_dir: PathBuf,
    /// Where the agent's interface listens.
    pub listen: SocketAddr,
    /// The control plane's API URL.
    pub control_url: String,
    /// Shared with the control plane (`HANGAR_AGENT_TOKEN`).
    pub token: String,
    pub region: String,
    pub http_listen: SocketAddr,
    pub https_listen: SocketAddr,
    pub app_domain: String,
    pub autostop_interval: Duration,
    pub proxy_response_timeout: Duration,
    pub proxy_queue_timeout: Duration,
    /// How this host keeps volumes (see `Volumes::loopback`).
    pub volumes: crate::volumes::VolumeSettings,
    /// Where machines' private DNS sends public names.
    pub dns: crate::dns::DnsSettings,
    /// Where this host's WireGuard gateway listens.
    pub wireguard: crate::gateway::GatewaySettings,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("create data dir {path}: {error}")]
    DataDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] LedgerError),
    #[error(
        "listen on {addr}: {error} (is another agent or server using it? choose another address)"
    )]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("serve: {0}")]
    Serve(std::io::Error),
    /// Volumes cannot be kept as configured (a snapshot bucket without credentials).
    #[error("{0}")]
    Volumes(String),
}

/// A started agent: where it listens, and how to serve until shutdown.
pub struct StandaloneAgent {
    pub listen_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    config: AgentConfig,
    supervisor: Supervisor,
    control: Control,
    listener: TcpListener,
    http: TcpListener,
    https: TcpListener,
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), AgentError> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|error| AgentError::Listen { addr, error })?;
    let a = l.local_addr().map_err(AgentError::Serve)?;
    Ok((l, a))
}

impl StandaloneAgent {
    /// Opens the agent's store, takes charge of its machines (whether or not the control
    /// plane answers) and binds its listeners.
    pub async fn start(
        config: AgentConfig,
        driver: Arc<dyn Driver>,
    ) -> Result<StandaloneAgent, AgentError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|error| AgentError::DataDir {
            path: config.data_dir.clone(),
            error,
        })?;
        let (ledger, _) = Ledger::open(&config.data_dir.join("agent.db"))?;
        let control = Control::new(&config.control_url, &config.token);
        let volumes =
            crate::volumes::Volumes::loopback(config.data_dir.join("volumes"), &config.volumes)
                .map_err(|e| AgentError::Volumes(e.to_string()))?;
        volumes.mount_all().await;
        let supervisor = Supervisor::new(
            ledger,
            Arc::new(control.clone()),
            driver,
            config.region.clone(),
            Arc::new(control.clone()),
            traffic::unobserved(),
            volumes,
        );
        supervisor.serve_private_dns(&config.dns);
        supervisor.serve_wireguard(&config.wireguard);
        supervisor.take_charge().await?;
        let (listener, listen_addr) = bind(config.listen).await?;
        let (http, http_addr) = bind(config.http_listen).await?;
        let (https, https_addr) = bind(config.https_listen).await?;
        Ok(StandaloneAgent {
            listen_addr,
            http_addr,
            https_addr,
            config,
            supervisor,
            control,
            listener,
            http,
            https,
        })
    }

    /// Serves the interface and the proxy until `shutdown`; machines are left running.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let me = Registration {
            url: format!("http://{}", self.listen_addr),
            region: self.config.region.clone(),
            capacity: Some(crate::host::HostCapacity::measure()),
            host_id: Some(
                crate::host::host_id(&self.config.data_dir).map_err(|error| {
                    AgentError::DataDir {
                        path: self.config.data_dir.clone(),
                        error,
                    }
                })?,
            ),
            run: Some(crate::ids::ulid()),
        };
        let (loaded, edge_loaded) = watch::channel(false);
        tokio::spawn(self.control.clone().keep_registered(
            me.clone(),
            edge_loaded,
            shutdown.clone(),
        ));
        let certs = Arc::new(CertTable::default());
        let (addresses, addresses_rx) = watch::channel(Arc::default());
        self.supervisor.follow_app_addresses(addresses_rx.clone());
        let tables = crate::remote::control::ProxyTables {
            certs: certs.clone(),
            addresses,
            loaded,
        };
        tokio::spawn(self.control.clone().follow_edge(
            me.url,
            tables,
            self.config.data_dir.join("edge.json"),
            shutdown.clone(),
        ));
        tokio::spawn(traffic::autostop(
            self.supervisor.clone(),
            self.config.region.clone(),
            self.config.autostop_interval,
            shutdown.clone(),
        ));
        let egress = Arc::new(hangar_proxy::Egress::default());
        tokio::spawn(
            self.control
                .clone()
                .report_egress(egress.clone(), shutdown.clone()),
        );
        let proxy = hangar_proxy::Proxy::new(
            ProxyConfig {
                app_domain: self.config.app_domain.clone(),
                region: self.config.region.clone(),
                https_port: Some(self.https_addr.port()),
                response_timeout: self.config.proxy_response_timeout,
                queue_timeout: self.config.proxy_queue_timeout,
            },
            self.supervisor.instances(),
            addresses_rx,
            Arc::new(traffic::ActorStarter(self.supervisor.clone())),
            self.supervisor.load(),
            certs,
            egress,
        );
        let proxy = tokio::spawn(proxy.serve(self.http, self.https, shutdown.clone()));
        let app = crate::remote::server::router(self.supervisor.clone(), &self.config.token);
        let stop = shutdown.clone();
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .map_err(AgentError::Serve);
        let _ = proxy.await;
        self.supervisor.shutdown().await;
        result
    }
}
