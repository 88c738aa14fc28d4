//! The machine supervisor: one actor per machine, the only writer of that machine's
//! state.
//!
//! API handlers send a [`MachineCmd`] to a machine's actor and get a reply; the actor
//! checks the command is legal in the current state, writes the transition and its event
//! to the agent's own store (the [`Ledger`]), then acts through the runtime driver; the
//! [`Mirror`] carries each change on to the control plane's copy. Each actor publishes a
//! [`Snapshot`] on a watch channel, which `wait` reads. At boot, [`Supervisor::take_charge`]
//! starts an actor for every machine in the ledger, which reconciles with what the driver
//! reports: running processes are adopted, exits that happened meanwhile are recorded.

mod actor;
pub mod checks;
pub mod instances;
mod launch;
mod restart;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_runtime::{Driver, ExecOutput};
use hangar_store::{MachineRecord, StoreError};
use hangar_types::{MachineConfig, MachineState, ProcessStat, Signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ledger::{Ledger, LedgerError};
use crate::mirror::{ControlPlane, Mirror};

pub use restart::RestartTracker;

/// What a machine looks like to waiters: its state, version and newest event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub state: MachineState,
    pub version: String,
    pub event_id: String,
}

/// Why a command was refused or failed; the API turns it into Fly's status and body.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum OpError {
    /// Illegal in the machine's current state (412 `failed_precondition`).
    #[error("failed_precondition: {0}")]
    Precondition(String),
    /// The request itself is wrong (400).
    #[error("{0}")]
    Invalid(String),
    /// Did not finish in time (408 `deadline_exceeded`).
    #[error("deadline_exceeded: {0}")]
    Timeout(String),
    /// The machine is gone (404).
    #[error("machine not found")]
    NotFound,
    /// The host's agent cannot be reached now (503).
    #[error("the host's agent is unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Internal(e.to_string())
    }
}

impl From<LedgerError> for OpError {
    fn from(e: LedgerError) -> Self {
        OpError::Internal(e.to_string())
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, OpError>>;

/// A command to a machine's actor. Each says in which states it is legal.
pub enum MachineCmd {
    /// From created, stopped, suspended (resumes) or failed; a no-op when already
    /// started or starting. Replies with the previous state.
    Start { reply: Reply<MachineState> },
    /// From started, created, suspended, failed; a no-op when stopped. Sends the signal,
    /// then kills after the timeout.
    Stop {
        signal: Option<Signal>,
        timeout: Option<Duration>,
        reply: Reply<()>,
    },
    /// From started: stop, then start the same version.
    Restart {
        signal: Option<Signal>,
        timeout: Option<Duration>,
        reply: Reply<()>,
    },
    /// From started: freeze, keeping memory.
    Suspend { reply: Reply<()> },
    /// From started: deliver a signal to the main process.
    Signal { signal: Signal, reply: Reply<()> },
    /// From any live state except transient ones: a new version replaces the config.
    Update {
        config: Box<MachineConfig>,
        skip_launch: bool,
        reply: Reply<String>,
    },
    /// From any state; a started machine needs `force`. Replies once destroyed.
    Destroy { force: bool, reply: Reply<()> },
    /// From started.
    Exec {
        argv: Vec<String>,
        stdin: Option<String>,
        timeout: Duration,
        reply: Reply<ExecOutput>,
    },
    /// From started: a console session's command, with the app's secrets.
    Console {
        session: hangar_runtime::console::ConsoleSpec,
        reply: Reply<hangar_runtime::console::Console>,
    },
    /// From started.
    Ps { reply: Reply<Vec<ProcessStat>> },
    /// From any state but destroyed: sets (`Some`) or removes (`None`) metadata keys in
    /// place, without a new version. With `machine_version`, only if it is current.
    SetMetadata {
        changes: Vec<(String, Option<String>)>,
        machine_version: Option<String>,
        reply: Reply<()>,
    },
    /// From any state but destroyed: the proxy stops (or resumes) routing to it.
    Cordon { cordoned: bool, reply: Reply<()> },
}

struct ActorHandle {
    tx: mpsc::Sender<MachineCmd>,
    snapshot: watch::Receiver<Snapshot>,
}

/// Shared by every actor.
pub(crate) struct Context {
    /// The agent's own store: the truth for this host's machines.
    pub ledger: Ledger,
    /// Carries each recorded change to the control plane.
    pub mirror: Mirror,
    pub driver: Arc<dyn Driver>,
    pub region: String,
    pub instances: Arc<instances::Instances>,
    pub checks: Arc<checks::CheckResults>,
    /// Requests in flight per machine, counted by the proxy; stops drain them first.
    pub load: Arc<hangar_proxy::Load>,
    /// Where machines get their secrets at start.
    pub secrets: Arc<dyn crate::SecretSource>,
    /// Hears how each machine looks (usage metering).
    pub observer: Arc<dyn crate::Observer>,
    /// This host's volumes, mounted into machines at start.
    pub volumes: crate::volumes::Volumes,
    /// The apps' own addresses (dedicated and Flycast), as the edge last published them.
    pub app_addresses: watch::Sender<Arc<hangar_proxy::AppAddresses>>,
    /// The WireGuard peers this host's gateway carries, for private DNS.
    pub peers: watch::Sender<Arc<Vec<hangar_net::wireguard::GatewayPeer>>>,
    /// This host's WireGuard gateway, once [`Supervisor::serve_wireguard`] set it up.
    pub gateway: std::sync::OnceLock<Arc<crate::gateway::PeerGateway>>,
}

/// The registry of machine actors. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    ctx: Arc<Context>,
    actors: Arc<Mutex<HashMap<String, ActorHandle>>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Supervisor {
    pub fn new(
        ledger: Ledger,
        control: Arc<dyn ControlPlane>,
        driver: Arc<dyn Driver>,
        region: String,
        secrets: Arc<dyn crate::SecretSource>,
        observer: Arc<dyn crate::Observer>,
        volumes: crate::volumes::Volumes,
    ) -> Self {
        Self {
            ctx: Arc::new(Context {
                volumes,
                mirror: Mirror::new(ledger.clone(), control),
                ledger,
                driver,
                region,
                secrets,
                observer,
                instances: Default::default(),
                checks: Default::default(),
                load: Arc::default(),
                app_addresses: watch::channel(Arc::default()).0,
                peers: watch::channel(Arc::default()).0,
                gateway: Default::default(),
            }),
            actors: Arc::default(),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// Serves private DNS to this host's container machines (see [`crate::dns`]); call
    /// before `take_charge`, so adopted machines are served as they come in.
    pub fn serve_private_dns(&self, settings: &crate::dns::DnsSettings) {
        crate::dns::start(
            &self.ctx.driver,
            self.instances(),
            self.ctx.app_addresses.subscribe(),
            self.ctx.peers.subscribe(),
            settings,
        );
    }

    /// Makes this host a WireGuard gateway for its org's peers (see
    /// [`crate::gateway`]): the peers kept from last time go back on its interface now.
    pub fn serve_wireguard(&self, settings: &crate::gateway::GatewaySettings) {
        let gateway = Arc::new(crate::gateway::PeerGateway::new(
            settings,
            self.ctx.peers.clone(),
        ));
        if self.ctx.gateway.set(gateway.clone()).is_ok() {
            tokio::spawn(async move { gateway.resume().await });
        }
    }

    /// This host's WireGuard gateway, if it serves as one.
    pub(crate) fn gateway(&self) -> Option<&Arc<crate::gateway::PeerGateway>> {
        self.ctx.gateway.get()
    }

    /// Follows the apps' addresses as the edge publishes them, for the Flycast names
    /// of private DNS and `hangar proxy`.
    pub fn follow_app_addresses(&self, mut from: watch::Receiver<Arc<hangar_proxy::AppAddresses>>) {
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            loop {
                let now = from.borrow_and_update().clone();
                ctx.app_addresses.send_replace(now);
                if from.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// The private names as machines resolve them now.
    pub(crate) fn private_view(&self) -> crate::dns::View {
        let set = self.instances().borrow().clone();
        let addresses = self.ctx.app_addresses.borrow().clone();
        let peers = self.ctx.peers.borrow().clone();
        crate::dns::View::of(&set, &addresses, &peers)
    }

    /// The region this host is in.
    pub fn region(&self) -> &str {
        &self.ctx.region
    }

    pub fn volumes(&self) -> &crate::volumes::Volumes {
        &self.ctx.volumes
    }

    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.ctx.driver
    }

    /// The machine's latest health check results.
    pub fn check_results(&self, machine_id: &str) -> Vec<hangar_types::CheckStatus> {
        self.ctx.checks.of(machine_id)
    }

    /// The proxy's count of requests in flight per machine.
    pub fn load(&self) -> Arc<hangar_proxy::Load> {
        self.ctx.load.clone()
    }

    /// The live set of instances, for the edge proxy.
    pub fn instances(&self) -> tokio::sync::watch::Receiver<Arc<hangar_proxy::InstanceSet>> {
        self.ctx.instances.subscribe()
    }

    /// Brings machines into the agent's store: the ones a host ran before its agent had
    /// a store of its own (taken from the control plane's copy, once, when the ledger
    /// is new).
    pub async fn bring_in(&self, machines: &[MachineRecord]) -> Result<(), LedgerError> {
        for m in machines {
            self.ctx.ledger.put(m).await?;
        }
        Ok(())
    }

    /// Sends the control plane what it missed, then starts an actor for every machine in
    /// the agent's store; each reconciles with the driver before taking commands. The
    /// machines are taken charge of whether or not the control plane answers.
    pub async fn take_charge(&self) -> Result<(), LedgerError> {
        if !self.ctx.mirror.flush().await {
            tracing::warn!("control plane away at start; machines run from the agent's store and their changes follow when it answers");
        }
        self.tracker
            .spawn(self.ctx.mirror.clone().run(self.cancel.child_token()));
        for m in self.ctx.ledger.machines().await? {
            self.spawn(m, actor::Boot::Reconcile);
        }
        Ok(())
    }

    /// Takes a machine the control plane just created (and recorded with its launch
    /// event) into the agent's store and starts its actor, which launches it unless
    /// `skip_launch`.
    pub async fn create(&self, machine: MachineRecord, skip_launch: bool) -> Result<(), OpError> {
        self.ctx.ledger.put(&machine).await?;
        let boot = if skip_launch {
            actor::Boot::Idle
        } else {
            actor::Boot::Launch
        };
        self.spawn(machine, boot);
        Ok(())
    }

    fn spawn(&self, machine: MachineRecord, boot: actor::Boot) {
        let (tx, rx) = mpsc::channel(32);
        let (snap_tx, snap_rx) = watch::channel(Snapshot {
            state: machine.state,
            version: machine.instance_id.clone(),
            event_id: String::new(),
        });
        let id = machine.id.clone();
        self.ctx.instances.put(instances::instance_of(
            &machine,
            self.ctx.driver.address(&id),
        ));
        self.ctx.observer.machine(&machine);
        self.lock().insert(
            id.clone(),
            ActorHandle {
                tx,
                snapshot: snap_rx,
            },
        );
        let actor = actor::MachineActor::new(self.ctx.clone(), machine, snap_tx);
        let actors = self.actors.clone();
        let cancel = self.cancel.child_token();
        self.tracker.spawn(async move {
            let destroyed = actor.run(boot, rx, cancel).await;
            if destroyed {
                if let Ok(mut map) = actors.lock() {
                    map.remove(&id);
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ActorHandle>> {
        self.actors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a command built around a reply channel and waits for the answer.
    pub async fn send<T>(
        &self,
        machine_id: &str,
        make: impl FnOnce(Reply<T>) -> MachineCmd,
    ) -> Result<T, OpError> {
        let tx = self
            .lock()
            .get(machine_id)
            .map(|h| h.tx.clone())
            .ok_or(OpError::NotFound)?;
        let (reply, rx) = oneshot::channel();
        tx.send(make(reply)).await.map_err(|_| OpError::NotFound)?;
        rx.await.map_err(|_| OpError::NotFound)?
    }

    /// Watches a machine's state; `None` once its actor is gone (destroyed).
    pub fn watch(&self, machine_id: &str) -> Option<watch::Receiver<Snapshot>> {
        self.lock().get(machine_id).map(|h| h.snapshot.clone())
    }

    /// Stops every actor, leaving machines running, and waits for them to finish.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.tracker.wait()).await;
    }
}
