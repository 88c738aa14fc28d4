//! One machine's actor: the only code that changes the machine's state.
//!
//! Every transition is written to the store (state and event in one transaction) before
//! the driver is told to act, and published to waiters afterwards. Commands are taken one
//! at a time; exits of the main process and scheduled restarts arrive on the same loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_runtime::{DriverError, ExitStatus};
use hangar_store::MachineRecord;
use hangar_types::machine_config::MachineConfig;
use hangar_types::observed::MachineChange;
use hangar_types::EventKind;
use hangar_types::{MachineEvent, MachineState, Signal};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{checks, instances, launch, Context, MachineCmd, OpError, RestartTracker, Snapshot};

mod commands;
mod reconcile;
use crate::{clock, ids};

/// How an actor begins.
pub(crate) enum Boot {
    /// A new machine: launch it.
    Launch,
    /// A new machine created with `skip_launch`.
    Idle,
    /// A stored machine after a server start: reconcile with the driver.
    Reconcile,
}

/// Fly's default stop timeout.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a start waits for the control plane to give the machine its secrets.
const SECRETS_WAIT: Duration = Duration::from_secs(30);
/// How long to wait for the process to go after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);

struct Proc {
    handle: String,
    exited: oneshot::Receiver<ExitStatus>,
}

pub(crate) struct MachineActor {
    ctx: Arc<Context>,
    m: MachineRecord,
    snap: watch::Sender<Snapshot>,
    running: Option<Proc>,
    restarts: RestartTracker,
    pending_restart: Option<tokio::time::Instant>,
    /// Stops the health checks of the current run.
    checks: Option<CancellationToken>,
    /// The secrets the current version last started with, for a restart while the
    /// control plane cannot give them.
    last_secrets: Option<(String, hangar_runtime::Secrets)>,
}

enum Wake {
    Cmd(Option<MachineCmd>),
    Exited(ExitStatus),
    RestartDue,
    Cancelled,
}

type Result<T> = std::result::Result<T, OpError>;

impl MachineActor {
    pub(crate) fn new(ctx: Arc<Context>, m: MachineRecord, snap: watch::Sender<Snapshot>) -> Self {
        Self {
            ctx,
            m,
            snap,
            running: None,
            restarts: RestartTracker::default(),
            pending_restart: None,
            checks: None,
            last_secrets: None,
        }
    }

    /// Runs until cancelled or destroyed; returns true when the machine was destroyed.
    pub(crate) async fn run(
        mut self,
        boot: Boot,
        mut rx: mpsc::Receiver<MachineCmd>,
        cancel: CancellationToken,
    ) -> bool {
        let destroyed = match boot {
            Boot::Launch => {
                self.start_new("user").await;
                false
            }
            Boot::Idle => false,
            Boot::Reconcile => self.reconcile().await,
        };
        if destroyed {
            return true;
        }
        loop {
            let wake = {
                let exited = async {
                    match self.running.as_mut() {
                        Some(p) => (&mut p.exited).await.unwrap_or_else(|_| lost_exit()),
                        None => std::future::pending().await,
                    }
                };
                let restart_due = async {
                    match self.pending_restart {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = cancel.cancelled() => Wake::Cancelled,
                    cmd = rx.recv() => Wake::Cmd(cmd),
                    status = exited => Wake::Exited(status),
                    _ = restart_due => Wake::RestartDue,
                }
            };
            match wake {
                Wake::Cancelled | Wake::Cmd(None) => return false,
                Wake::Cmd(Some(cmd)) => {
                    if self.handle(cmd).await {
                        return true;
                    }
                }
                Wake::Exited(status) => {
                    self.running = None;
                    if self.on_exit(status).await {
                        return true;
                    }
                }
                Wake::RestartDue => {
                    self.pending_restart = None;
                    if self.m.state == MachineState::Stopped {
                        self.start_new("flyd").await;
                    }
                }
            }
        }
    }

    // ----- transitions -------------------------------------------------------------

    /// Writes a state change and its event, then publishes it.
    async fn transition(
        &mut self,
        state: MachineState,
        kind: EventKind,
        source: &str,
        request: Option<Value>,
        runtime: Option<Option<String>>,
    ) -> Result<()> {
        let event = MachineEvent {
            id: ids::ulid(),
            kind,
            status: state.as_str().to_string(),
            source: source.to_string(),
            timestamp: clock::now_ms(),
            request,
        };
        let mut next = self.m.clone();
        next.state = state;
        next.updated_at = clock::rfc3339_now();
        if let Some(rt) = &runtime {
            next.runtime = rt.clone();
        }
        let change = MachineChange::Transition {
            machine_id: next.id.clone(),
            state,
            runtime,
            event: event.clone(),
            at: next.updated_at.clone(),
        };
        self.record(next, change).await?;
        self.publish(event.id);
        self.sync_checks();
        Ok(())
    }

    /// Makes `next` the machine's recorded self: written to the agent's store with the
    /// change for the control plane, which is then given a moment to have it.
    async fn record(&mut self, next: MachineRecord, change: MachineChange) -> Result<()> {
        let seq = self.ctx.ledger.record(&next, &change).await?;
        self.m = next;
        self.ctx.mirror.settle(seq).await;
        Ok(())
    }

    fn publish(&self, event_id: String) {
        self.publish_instance();
        self.snap.send_replace(Snapshot {
            state: self.m.state,
            version: self.m.instance_id.clone(),
            event_id,
        });
    }

    /// Runs health checks while the machine is started, and only then; each run of the
    /// machine starts with no results, so nothing passes before it has been checked.
    fn sync_checks(&mut self) {
        if let Some(c) = self.checks.take() {
            c.cancel();
            self.ctx.checks.forget(&self.m.id);
        }
        if self.m.state != MachineState::Started {
            return;
        }
        let Some(address) = self.ctx.driver.address(&self.m.id) else {
            if checks::has_checks(&self.m.config) {
                warn!(machine = %self.m.id, app = %self.m.app_name, "machine has health checks but the driver gives it no address; they do not run");
            }
            return;
        };
        let cancel = CancellationToken::new();
        checks::spawn(
            self.ctx.checks.clone(),
            self.ctx.instances.clone(),
            self.m.id.clone(),
            &self.m.config,
            address,
            cancel.clone(),
        );
        self.checks = Some(cancel);
    }

    /// Tells the proxy (and the observer) how the machine looks now.
    fn publish_instance(&self) {
        let address = self.ctx.driver.address(&self.m.id);
        self.ctx
            .instances
            .put(instances::instance_of(&self.m, address));
        self.ctx.observer.machine(&self.m);
    }

    /// Logs a failed transition; the machine keeps its last recorded state.
    fn log_err(&self, what: &str, r: Result<()>) {
        if let Err(e) = r {
            warn!(machine = %self.m.id, app = %self.m.app_name, error = %e, "{what}");
        }
    }

    // ----- starting ------------------------------------------------------------------

    /// Records `starting`, the part of a start a caller must see before the reply.
    async fn begin_start(&mut self, source: &str) -> Result<()> {
        self.pending_restart = None;
        self.transition(MachineState::Starting, EventKind::Start, source, None, None)
            .await
    }

    /// Launches the current version; records `started` or `failed`.
    async fn finish_start(&mut self) {
        let volumes = launch::volume_mounts(&self.ctx.volumes, &self.m.config).await;
        let started = match (self.secrets().await, volumes) {
            (Ok(secrets), Ok(volumes)) => {
                let spec = launch::spec(&self.m, &self.ctx.region, secrets, volumes);
                self.ctx.driver.start(&spec).await
            }
            (_, Err(e)) => Err(hangar_runtime::DriverError::InvalidConfig(e)),
            (Err(e), _) => Err(hangar_runtime::DriverError::InvalidConfig(format!(
                "cannot give the machine its secrets: {e}"
            ))),
        };
        match started {
            Ok(run) => {
                let handle = run.handle.clone();
                self.running = Some(Proc {
                    handle: run.handle,
                    exited: run.exited,
                });
                let r = self
                    .transition(
                        MachineState::Started,
                        EventKind::Start,
                        "flyd",
                        None,
                        Some(Some(handle)),
                    )
                    .await;
                info!(machine = %self.m.id, app = %self.m.app_name, "machine started");
                self.log_err("record start", r);
            }
            Err(e) => {
                warn!(machine = %self.m.id, app = %self.m.app_name, error = %e, "machine failed to start");
                let req = json!({ "error": e.to_string() });
                let r = self
                    .transition(
                        MachineState::Failed,
                        EventKind::Start,
                        "flyd",
                        Some(req),
                        Some(None),
                    )
                    .await;
                self.log_err("record failed start", r);
            }
        }
    }

    /// The machine's secrets from the control plane; when it cannot give them now, the
    /// ones this version last started with (a restart keeps working while it is away),
    /// or, having none, it waits for the control plane a while (an agent that starts
    /// before its control plane does not fail its machines).
    async fn secrets(&mut self) -> std::result::Result<hangar_runtime::Secrets, String> {
        let until = tokio::time::Instant::now() + SECRETS_WAIT;
        loop {
            match self.ctx.secrets.for_machine(&self.m).await {
                Ok(secrets) => {
                    self.last_secrets = Some((self.m.instance_id.clone(), secrets.clone()));
                    return Ok(secrets);
                }
                Err(crate::SecretsError::Unavailable(e)) => match &self.last_secrets {
                    Some((version, secrets)) if *version == self.m.instance_id => {
                        warn!(machine = %self.m.id, error = %e, "secrets unavailable; starting with the ones this version last had");
                        return Ok(secrets.clone());
                    }
                    _ if tokio::time::Instant::now() < until => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    _ => return Err(e),
                },
                Err(crate::SecretsError::Failed(e)) => return Err(e),
            }
        }
    }

    async fn start_new(&mut self, source: &str) {
        match self.begin_start(source).await {
            Ok(()) => self.finish_start().await,
            Err(e) => self.log_err("record starting", Err(e)),
        }
    }

    async fn resume(&mut self) {
        let Some(handle) = self.running.as_ref().map(|p| p.handle.clone()) else {
            return self.finish_start().await;
        };
        match self.ctx.driver.resume(&handle).await {
            Ok(()) => {
                let r = self
                    .transition(MachineState::Started, EventKind::Start, "flyd", None, None)
                    .await;
                self.log_err("record resume", r);
            }
            Err(e) => {
                warn!(machine = %self.m.id, error = %e, "resume failed; booting afresh");
                self.kill_process().await;
                self.finish_start().await;
            }
        }
    }

    // ----- stopping ------------------------------------------------------------------

    fn stop_defaults(
        config: &MachineConfig,
        signal: Option<Signal>,
        timeout: Option<Duration>,
    ) -> (Signal, Duration) {
        let sc = config.stop_config.as_ref();
        let signal = signal
            .or_else(|| sc.and_then(|s| s.signal))
            .unwrap_or(Signal::SIGINT);
        let timeout = timeout
            .filter(|t| !t.is_zero())
            .or_else(|| {
                sc.and_then(|s| s.timeout)
                    .map(|t| t.0)
                    .filter(|t| !t.is_zero())
            })
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        (signal, timeout)
    }

    /// Sends `signal`, waits up to `timeout`, then kills everything; returns how the main
    /// process ended, or `None` when nothing was running.
    async fn stop_process(&mut self, signal: Signal, timeout: Duration) -> Option<ExitStatus> {
        // The machine is no longer `started`, so the proxy sends it nothing new; let the
        // requests it is serving finish first, within the same timeout.
        if signal != Signal::SIGKILL {
            self.drain(timeout).await;
        }
        let mut p = self.running.take()?;
        let driver = self.ctx.driver.clone();
        // A frozen process cannot handle its stop signal: thaw it first.
        let _ = driver.resume(&p.handle).await;
        if let Err(e) = driver.signal(&p.handle, signal).await {
            warn!(machine = %self.m.id, error = %e, "send stop signal");
        }
        let status = match tokio::time::timeout(timeout, &mut p.exited).await {
            Ok(st) => st.unwrap_or_else(|_| lost_exit()),
            Err(_) => {
                info!(machine = %self.m.id, ?timeout, "stop timeout passed; killing");
                let _ = driver.kill_all(&p.handle).await;
                match tokio::time::timeout(KILL_GRACE, &mut p.exited).await {
                    Ok(st) => st.unwrap_or_else(|_| lost_exit()),
                    Err(_) => lost_exit(),
                }
            }
        };
        // Children the main process left behind go with it.
        let _ = driver.kill_all(&p.handle).await;
        Some(status)
    }

    /// Waits until the proxy counts no request in flight to this machine, or `timeout`.
    async fn drain(&self, timeout: Duration) {
        let until = tokio::time::Instant::now() + timeout;
        while self.ctx.load.of(&self.m.id) > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn kill_process(&mut self) -> Option<ExitStatus> {
        self.stop_process(Signal::SIGKILL, KILL_GRACE).await
    }

    async fn record_requested_exit(&mut self, status: Option<ExitStatus>) -> Result<()> {
        let req =
            status.map(|s| exit_request(&s, true, false, self.restarts.count(Instant::now())));
        self.transition(
            MachineState::Stopped,
            EventKind::Exit,
            "flyd",
            req,
            Some(None),
        )
        .await
    }

    /// An exit nobody asked for: record it, then apply the restart policy and
    /// `auto_destroy`. Returns true when the machine was destroyed.
    async fn on_exit(&mut self, status: ExitStatus) -> bool {
        let now = Instant::now();
        let restart =
            self.restarts
                .should_restart(self.m.config.restart_policy(), status.is_success(), now);
        info!(machine = %self.m.id, app = %self.m.app_name, exit_code = status.exit_code, restart, "machine exited");
        let req = exit_request(&status, false, restart, self.restarts.count(now));
        let r = self
            .transition(
                MachineState::Stopped,
                EventKind::Exit,
                "flyd",
                Some(req),
                Some(None),
            )
            .await;
        self.log_err("record exit", r);
        if restart {
            let delay = self.restarts.backoff(now);
            if delay.is_zero() {
                self.start_new("flyd").await;
            } else {
                self.pending_restart = Some(tokio::time::Instant::now() + delay);
            }
            return false;
        }
        if self.m.config.auto_destroy == Some(true) {
            return self.destroy_now().await.is_ok();
        }
        false
    }

    async fn destroy_now(&mut self) -> Result<()> {
        self.pending_restart = None;
        self.transition(
            MachineState::Destroying,
            EventKind::Destroy,
            "user",
            None,
            None,
        )
        .await?;
        self.kill_process().await;
        if let Err(e) = self.ctx.driver.destroy(&self.m.id).await {
            warn!(machine = %self.m.id, error = %e, "remove machine files");
        }
        self.transition(
            MachineState::Destroyed,
            EventKind::Destroy,
            "flyd",
            None,
            Some(None),
        )
        .await?;
        info!(machine = %self.m.id, app = %self.m.app_name, "machine destroyed");
        Ok(())
    }
}

pub(super) fn not_now(op: &str, state: MachineState) -> OpError {
    OpError::Precondition(format!("cannot {op} machine in state '{state}'"))
}

pub(super) fn driver_error(e: DriverError) -> OpError {
    match e {
        DriverError::NotRunning => OpError::Precondition("machine is not running".into()),
        DriverError::Timeout(t) => {
            OpError::Timeout(format!("command did not finish within {}s", t.as_secs()))
        }
        DriverError::InvalidConfig(m) => OpError::Invalid(m),
        other => OpError::Internal(other.to_string()),
    }
}

/// An exit whose details could not be learned.
pub(super) fn lost_exit() -> ExitStatus {
    ExitStatus {
        exit_code: -1,
        exited_at: clock::now_ms(),
        error: Some("exit status unknown: the machine's process was lost".into()),
        ..Default::default()
    }
}

/// The `request` of an `exit` event, in Fly's shape.
fn exit_request(
    s: &ExitStatus,
    requested_stop: bool,
    restarting: bool,
    restart_count: u32,
) -> Value {
    let secs = s.exited_at / 1000;
    let mut exit_event = json!({
        "exit_code": s.exit_code,
        "guest_exit_code": s.exit_code,
        "guest_signal": s.signal.unwrap_or(-1),
        "signal": s.signal.unwrap_or(-1),
        "oom_killed": s.oom_killed,
        "requested_stop": requested_stop,
        "restarting": restarting,
        "exited_at": clock::rfc3339_from_secs(secs),
    });
    if let Some(err) = &s.error {
        exit_event["error"] = json!(err);
    }
    json!({ "exit_event": exit_event, "restart_count": restart_count })
}
