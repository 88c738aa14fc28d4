//! One machine's actor: the only code that changes the machine's state.
//!
//! Every transition is written to the store (state and event in one transaction) before
//! the driver is told to act, and published to waiters afterwards. Commands are taken one
//! at a time; exits of the main process and scheduled restarts arrive on the same loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_runtime::{Adopted, DriverError, ExitStatus};
use hangar_store::MachineRecord;
use hangar_types::machine_config::MachineConfig;
use hangar_types::{MachineEvent, MachineState, Signal};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{launch, Context, MachineCmd, OpError, RestartTracker, Snapshot};
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
        kind: &str,
        source: &str,
        request: Option<Value>,
        runtime: Option<Option<String>>,
    ) -> Result<()> {
        let event = MachineEvent {
            id: ids::ulid(),
            kind: kind.to_string(),
            status: state.as_str().to_string(),
            source: source.to_string(),
            timestamp: clock::now_ms(),
            request,
        };
        let id = self.m.id.clone();
        let now = clock::rfc3339_now();
        let (ev, rt, at) = (event.clone(), runtime.clone(), now.clone());
        self.ctx
            .store
            .call(move |db| {
                db.record_transition(&id, state, rt.as_ref().map(|r| r.as_deref()), &ev, &at)
            })
            .await?;
        self.m.state = state;
        self.m.updated_at = now;
        if let Some(rt) = runtime {
            self.m.runtime = rt;
        }
        self.publish(event.id);
        Ok(())
    }

    fn publish(&self, event_id: String) {
        self.snap.send_replace(Snapshot {
            state: self.m.state,
            version: self.m.instance_id.clone(),
            event_id,
        });
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
        self.transition(MachineState::Starting, "start", source, None, None)
            .await
    }

    /// Launches the current version; records `started` or `failed`.
    async fn finish_start(&mut self) {
        let spec = launch::spec(&self.m, &self.ctx.region);
        match self.ctx.driver.start(&spec).await {
            Ok(run) => {
                let handle = run.handle.clone();
                self.running = Some(Proc {
                    handle: run.handle,
                    exited: run.exited,
                });
                let r = self
                    .transition(
                        MachineState::Started,
                        "start",
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
                    .transition(MachineState::Failed, "start", "flyd", Some(req), Some(None))
                    .await;
                self.log_err("record failed start", r);
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
                    .transition(MachineState::Started, "start", "flyd", None, None)
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

    async fn kill_process(&mut self) -> Option<ExitStatus> {
        self.stop_process(Signal::SIGKILL, KILL_GRACE).await
    }

    async fn record_requested_exit(&mut self, status: Option<ExitStatus>) -> Result<()> {
        let req =
            status.map(|s| exit_request(&s, true, false, self.restarts.count(Instant::now())));
        self.transition(MachineState::Stopped, "exit", "flyd", req, Some(None))
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
            .transition(MachineState::Stopped, "exit", "flyd", Some(req), Some(None))
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
        self.transition(MachineState::Destroying, "destroy", "user", None, None)
            .await?;
        self.kill_process().await;
        if let Err(e) = self.ctx.driver.destroy(&self.m.id).await {
            warn!(machine = %self.m.id, error = %e, "remove machine files");
        }
        self.transition(MachineState::Destroyed, "destroy", "flyd", None, Some(None))
            .await?;
        let id = self.m.id.clone();
        self.ctx.store.call(move |db| db.delete_lease(&id)).await?;
        info!(machine = %self.m.id, app = %self.m.app_name, "machine destroyed");
        Ok(())
    }

    // ----- commands ------------------------------------------------------------------

    /// Handles one command; returns true when the machine is now destroyed.
    async fn handle(&mut self, cmd: MachineCmd) -> bool {
        use MachineState as S;
        let state = self.m.state;
        match cmd {
            MachineCmd::Start { reply } => match state {
                S::Started | S::Starting => {
                    let _ = reply.send(Ok(state));
                }
                S::Created | S::Stopped | S::Failed | S::Suspended => {
                    let r = self.begin_start("user").await;
                    let ok = r.is_ok();
                    let _ = reply.send(r.map(|_| state));
                    if ok {
                        if state == S::Suspended {
                            self.resume().await;
                        } else {
                            self.finish_start().await;
                        }
                    }
                }
                _ => {
                    let msg = if state == S::Replacing {
                        "machine getting replaced, refusing to start".to_string()
                    } else {
                        format!("unable to start machine from current state: '{state}'")
                    };
                    let _ = reply.send(Err(OpError::Precondition(msg)));
                }
            },
            MachineCmd::Stop {
                signal,
                timeout,
                reply,
            } => match state {
                S::Stopped => {
                    let _ = reply.send(Ok(()));
                }
                S::Started | S::Created | S::Suspended | S::Failed | S::Starting => {
                    let (signal, timeout) = Self::stop_defaults(&self.m.config, signal, timeout);
                    let r = self
                        .transition(S::Stopping, "stop", "user", None, None)
                        .await;
                    let ok = r.is_ok();
                    let _ = reply.send(r);
                    if ok {
                        self.pending_restart = None;
                        let status = self.stop_process(signal, timeout).await;
                        let r = self.record_requested_exit(status).await;
                        self.log_err("record stop", r);
                    }
                }
                _ => {
                    let _ = reply.send(Err(not_now("stop", state)));
                }
            },
            MachineCmd::Restart {
                signal,
                timeout,
                reply,
            } => match state {
                S::Started => {
                    let (signal, timeout) = Self::stop_defaults(&self.m.config, signal, timeout);
                    let r = self
                        .transition(S::Restarting, "restart", "user", None, None)
                        .await;
                    let ok = r.is_ok();
                    let _ = reply.send(r);
                    if ok {
                        self.stop_process(signal, timeout).await;
                        self.start_new("flyd").await;
                    }
                }
                _ => {
                    let _ = reply.send(Err(not_now("restart", state)));
                }
            },
            MachineCmd::Suspend { reply } => match (state, self.running.as_ref()) {
                (S::Suspended, _) => {
                    let _ = reply.send(Ok(()));
                }
                (S::Started, Some(p)) => {
                    let handle = p.handle.clone();
                    let r = self
                        .transition(S::Suspending, "suspend", "user", None, None)
                        .await;
                    let ok = r.is_ok();
                    let _ = reply.send(r);
                    if ok {
                        let r = match self.ctx.driver.suspend(&handle).await {
                            Ok(()) => {
                                self.transition(S::Suspended, "suspend", "flyd", None, None)
                                    .await
                            }
                            Err(e) => {
                                let req = json!({ "error": e.to_string() });
                                self.transition(S::Started, "suspend", "flyd", Some(req), None)
                                    .await
                            }
                        };
                        self.log_err("record suspend", r);
                    }
                }
                _ => {
                    let _ = reply.send(Err(not_now("suspend", state)));
                }
            },
            MachineCmd::Signal { signal, reply } => {
                let r = match (state, self.running.as_ref()) {
                    (S::Started, Some(p)) => self
                        .ctx
                        .driver
                        .signal(&p.handle, signal)
                        .await
                        .map_err(driver_error),
                    _ => Err(not_now("signal", state)),
                };
                let _ = reply.send(r);
            }
            MachineCmd::Update {
                config,
                skip_launch,
                reply,
            } => {
                if !matches!(
                    state,
                    S::Created | S::Started | S::Stopped | S::Suspended | S::Failed
                ) {
                    let _ = reply.send(Err(OpError::Precondition(format!(
                        "machine is {state}; wait for it to settle (GET …/wait?state=settled) before updating"
                    ))));
                    return false;
                }
                let old = std::mem::replace(&mut self.m.config, *config);
                let (signal, timeout) = Self::stop_defaults(&old, None, None);
                let version = ids::ulid();
                let r = self.record_version(&version, state).await;
                if r.is_err() {
                    self.m.config = old;
                }
                let ok = r.is_ok();
                let _ = reply.send(r.map(|_| version));
                if ok {
                    self.pending_restart = None;
                    self.stop_process(signal, timeout).await;
                    let r = match state {
                        S::Started if !skip_launch => {
                            self.start_new("flyd").await;
                            Ok(())
                        }
                        S::Created => {
                            self.transition(S::Created, "update", "flyd", None, Some(None))
                                .await
                        }
                        _ => {
                            self.transition(S::Stopped, "update", "flyd", None, Some(None))
                                .await
                        }
                    };
                    self.log_err("record update", r);
                }
            }
            MachineCmd::Destroy { force, reply } => {
                let live = matches!(
                    state,
                    S::Started | S::Starting | S::Restarting | S::Stopping | S::Suspending
                );
                if live && !force {
                    let _ = reply.send(Err(OpError::Precondition(format!(
                        "machine {} is {state}; stop it first, or destroy it with force=true",
                        self.m.id
                    ))));
                    return false;
                }
                let r = self.destroy_now().await;
                let done = r.is_ok();
                let _ = reply.send(r);
                return done;
            }
            MachineCmd::Exec {
                argv,
                stdin,
                timeout,
                reply,
            } => {
                let Some(handle) = self.running_handle(state) else {
                    let _ = reply.send(Err(not_now("exec", state)));
                    return false;
                };
                let (driver, spec) = (
                    self.ctx.driver.clone(),
                    launch::spec(&self.m, &self.ctx.region),
                );
                tokio::spawn(async move {
                    let r = driver
                        .exec(&handle, &spec, &argv, stdin.as_deref(), timeout)
                        .await
                        .map_err(driver_error);
                    let _ = reply.send(r);
                });
            }
            MachineCmd::SetMetadata {
                changes,
                machine_version,
                reply,
            } => {
                let r = self.set_metadata(changes, machine_version).await;
                let _ = reply.send(r);
            }
            MachineCmd::Cordon { cordoned, reply } => {
                let (id, now) = (self.m.id.clone(), clock::rfc3339_now());
                let r = self
                    .ctx
                    .store
                    .call(move |db| db.set_cordoned(&id, cordoned, &now))
                    .await
                    .map_err(OpError::from);
                if r.is_ok() {
                    self.m.cordoned = cordoned;
                }
                let _ = reply.send(r);
            }
            MachineCmd::Ps { reply } => {
                let Some(handle) = self.running_handle(state) else {
                    let _ = reply.send(Err(not_now("list processes of", state)));
                    return false;
                };
                let driver = self.ctx.driver.clone();
                tokio::spawn(async move {
                    let _ = reply.send(driver.ps(&handle).await.map_err(driver_error));
                });
            }
        }
        false
    }

    async fn set_metadata(
        &mut self,
        changes: Vec<(String, Option<String>)>,
        machine_version: Option<String>,
    ) -> Result<()> {
        if let Some(v) = machine_version.filter(|v| !v.is_empty()) {
            if v != self.m.instance_id {
                return Err(OpError::Precondition(format!(
                    "machine version mismatch: the machine is at version {}, the request names {v}",
                    self.m.instance_id
                )));
            }
        }
        let mut config = self.m.config.clone();
        let meta = config.metadata.get_or_insert_with(Default::default);
        for (k, v) in changes {
            match v.filter(|v| !v.is_empty()) {
                Some(v) => meta.insert(k, v),
                None => meta.remove(&k),
            };
        }
        let (id, cfg, now) = (self.m.id.clone(), config.clone(), clock::rfc3339_now());
        self.ctx
            .store
            .call(move |db| db.replace_config_in_place(&id, &cfg, &now))
            .await?;
        self.m.config = config;
        Ok(())
    }

    fn running_handle(&self, state: MachineState) -> Option<String> {
        (state == MachineState::Started)
            .then(|| self.running.as_ref().map(|p| p.handle.clone()))
            .flatten()
    }

    async fn record_version(&mut self, version: &str, prev: MachineState) -> Result<()> {
        let event = MachineEvent {
            id: ids::ulid(),
            kind: "update".into(),
            status: MachineState::Replacing.as_str().into(),
            source: "user".into(),
            timestamp: clock::now_ms(),
            request: Some(json!({ "previous_state": prev.as_str() })),
        };
        let (id, v, cfg, ev, now) = (
            self.m.id.clone(),
            version.to_string(),
            self.m.config.clone(),
            event.clone(),
            clock::rfc3339_now(),
        );
        let at = now.clone();
        self.ctx
            .store
            .call(move |db| db.record_new_version(&id, &v, &cfg, MachineState::Replacing, &ev, &at))
            .await?;
        self.m.instance_id = version.to_string();
        self.m.state = MachineState::Replacing;
        self.m.updated_at = now;
        self.publish(event.id);
        Ok(())
    }

    // ----- after a server restart --------------------------------------------------

    /// Brings the stored state in line with what the driver reports. Returns true when
    /// the machine ended up destroyed.
    async fn reconcile(&mut self) -> bool {
        use MachineState as S;
        let state = self.m.state;
        let adopted = match self.m.runtime.clone() {
            Some(handle) => match self.ctx.driver.adopt(&handle).await {
                Ok(Adopted::Running(exited)) => {
                    self.running = Some(Proc { handle, exited });
                    None
                }
                Ok(Adopted::Exited(status)) => Some(status),
                Err(e) => {
                    warn!(machine = %self.m.id, error = %e, "cannot adopt machine; treating it as exited");
                    Some(lost_exit())
                }
            },
            None => None,
        };
        let alive = self.running.is_some();
        info!(machine = %self.m.id, app = %self.m.app_name, state = %state, alive, "reconciling machine");
        let r = match (state, alive, adopted) {
            (S::Destroying, _, _) => return self.destroy_now().await.is_ok(),
            (S::Started, true, _) | (S::Suspended, true, _) => Ok(()),
            (S::Starting | S::Restarting, true, _) => {
                self.transition(S::Started, "start", "flyd", None, None)
                    .await
            }
            (S::Suspending, true, _) => match self.running.as_ref().map(|p| p.handle.clone()) {
                Some(h) => {
                    let _ = self.ctx.driver.suspend(&h).await;
                    self.transition(S::Suspended, "suspend", "flyd", None, None)
                        .await
                }
                None => Ok(()),
            },
            (S::Replacing, true, _) => {
                let (sig, t) = Self::stop_defaults(&self.m.config, None, None);
                self.stop_process(sig, t).await;
                self.start_new("flyd").await;
                Ok(())
            }
            (_, true, _) => {
                // Alive although it should not run (stopping, stopped, created, failed).
                let (sig, t) = Self::stop_defaults(&self.m.config, None, None);
                let status = self.stop_process(sig, t).await;
                self.record_requested_exit(status).await
            }
            (S::Stopping | S::Replacing, false, status) => self.record_requested_exit(status).await,
            (
                S::Started | S::Starting | S::Restarting | S::Suspended | S::Suspending,
                false,
                Some(status),
            ) => {
                return self.on_exit(status).await;
            }
            (S::Starting | S::Restarting, false, None) => {
                self.finish_start().await;
                Ok(())
            }
            (S::Started | S::Suspended | S::Suspending, false, None) => {
                return self.on_exit(lost_exit()).await;
            }
            _ => Ok(()),
        };
        self.log_err("reconcile", r);
        false
    }
}

fn not_now(op: &str, state: MachineState) -> OpError {
    OpError::Precondition(format!("cannot {op} machine in state '{state}'"))
}

fn driver_error(e: DriverError) -> OpError {
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
fn lost_exit() -> ExitStatus {
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
