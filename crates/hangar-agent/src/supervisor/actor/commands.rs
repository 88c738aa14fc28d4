//! The commands a machine's actor takes ([`MachineCmd`]): each checks that it is legal
//! in the current state, records its transition, replies, then acts.

use std::sync::Arc;
use std::time::Duration;

use hangar_runtime::console::{Console, ConsoleSpec};
use hangar_runtime::{Driver, DriverError, ExecOutput, LaunchSpec};
use hangar_types::observed::MachineChange;
use hangar_types::EventKind;
use hangar_types::{MachineConfig, MachineEvent, MachineState, ProcessStat, Signal};
use serde_json::json;

use super::{driver_error, not_now, MachineActor, Result};
use crate::supervisor::{launch, MachineCmd, OpError, Reply};
use crate::{clock, ids};

use MachineState as S;

impl MachineActor {
    /// Handles one command; returns true when the machine is now destroyed.
    pub(super) async fn handle(&mut self, cmd: MachineCmd) -> bool {
        match cmd {
            MachineCmd::Start { reply } => self.start(reply).await,
            MachineCmd::Stop {
                signal,
                timeout,
                reply,
            } => self.stop(signal, timeout, reply).await,
            MachineCmd::Restart {
                signal,
                timeout,
                reply,
            } => self.restart(signal, timeout, reply).await,
            MachineCmd::Suspend { reply } => self.suspend(reply).await,
            MachineCmd::Signal { signal, reply } => self.signal(signal, reply).await,
            MachineCmd::Update {
                config,
                skip_launch,
                reply,
            } => self.update(*config, skip_launch, reply).await,
            MachineCmd::Destroy { force, reply } => return self.destroy(force, reply).await,
            MachineCmd::Exec {
                argv,
                stdin,
                timeout,
                reply,
            } => self.exec(argv, stdin, timeout, reply),
            MachineCmd::SetMetadata {
                changes,
                machine_version,
                reply,
            } => {
                let r = self.set_metadata(changes, machine_version).await;
                let _ = reply.send(r);
            }
            MachineCmd::Cordon { cordoned, reply } => self.cordon(cordoned, reply).await,
            MachineCmd::Console { session, reply } => self.console(session, reply),
            MachineCmd::Ps { reply } => self.ps(reply),
        }
        false
    }

    /// Starts (or resumes) a machine that is not running; replies with its previous state.
    async fn start(&mut self, reply: Reply<MachineState>) {
        let state = self.m.state;
        match state {
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
        }
    }

    /// Stops the machine's process and records the exit as one that was asked for.
    async fn stop(&mut self, signal: Option<Signal>, timeout: Option<Duration>, reply: Reply<()>) {
        let state = self.m.state;
        match state {
            S::Stopped => {
                let _ = reply.send(Ok(()));
            }
            S::Started | S::Created | S::Suspended | S::Failed | S::Starting => {
                let (signal, timeout) = Self::stop_defaults(&self.m.config, signal, timeout);
                let r = self
                    .transition(S::Stopping, EventKind::Stop, "user", None, None)
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
        }
    }

    /// Stops a started machine, then starts the same version again.
    async fn restart(
        &mut self,
        signal: Option<Signal>,
        timeout: Option<Duration>,
        reply: Reply<()>,
    ) {
        let state = self.m.state;
        if state != S::Started {
            let _ = reply.send(Err(not_now("restart", state)));
            return;
        }
        let (signal, timeout) = Self::stop_defaults(&self.m.config, signal, timeout);
        let r = self
            .transition(S::Restarting, EventKind::Restart, "user", None, None)
            .await;
        let ok = r.is_ok();
        let _ = reply.send(r);
        if ok {
            self.stop_process(signal, timeout).await;
            self.start_new("flyd").await;
        }
    }

    /// Freezes a started machine, keeping its memory.
    async fn suspend(&mut self, reply: Reply<()>) {
        let state = self.m.state;
        match (state, self.running.as_ref()) {
            (S::Suspended, _) => {
                let _ = reply.send(Ok(()));
            }
            (S::Started, Some(p)) => {
                let handle = p.handle.clone();
                let r = self
                    .transition(S::Suspending, EventKind::Suspend, "user", None, None)
                    .await;
                let ok = r.is_ok();
                let _ = reply.send(r);
                if ok {
                    self.freeze(&handle).await;
                }
            }
            _ => {
                let _ = reply.send(Err(not_now("suspend", state)));
            }
        }
    }

    /// Lets the machine's requests finish, then has the driver freeze its process;
    /// records `suspended`, or `started` again with the error when the driver cannot.
    async fn freeze(&mut self, handle: &str) {
        self.drain(super::DEFAULT_STOP_TIMEOUT).await;
        let r = match self.ctx.driver.suspend(handle).await {
            Ok(()) => {
                self.transition(S::Suspended, EventKind::Suspend, "flyd", None, None)
                    .await
            }
            Err(e) => {
                let req = json!({ "error": e.to_string() });
                self.transition(S::Started, EventKind::Suspend, "flyd", Some(req), None)
                    .await
            }
        };
        self.log_err("record suspend", r);
    }

    /// Delivers a signal to the main process of a started machine.
    async fn signal(&self, signal: Signal, reply: Reply<()>) {
        let state = self.m.state;
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

    /// Replaces the machine's config with a new version; replies with the version, then
    /// stops the old process and starts the new one, or leaves it created or stopped.
    async fn update(&mut self, mut config: MachineConfig, skip_launch: bool, reply: Reply<String>) {
        let state = self.m.state;
        if let Err(m) = keep_volume(&self.m.config, &mut config) {
            let _ = reply.send(Err(OpError::Invalid(m)));
            return;
        }
        if !matches!(
            state,
            S::Created | S::Started | S::Stopped | S::Suspended | S::Failed
        ) {
            let _ = reply.send(Err(OpError::Precondition(format!(
                "machine is {state}; wait for it to settle (GET …/wait?state=settled) before updating"
            ))));
            return;
        }
        let old = std::mem::replace(&mut self.m.config, config);
        let (signal, timeout) = Self::stop_defaults(&old, None, None);
        let version = ids::ulid();
        let r = self.record_version(&version, state, skip_launch).await;
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
                    self.transition(S::Created, EventKind::Update, "flyd", None, Some(None))
                        .await
                }
                _ => {
                    self.transition(S::Stopped, EventKind::Update, "flyd", None, Some(None))
                        .await
                }
            };
            self.log_err("record update", r);
        }
    }

    /// Destroys the machine (a live one only with `force`); returns true once it is gone.
    async fn destroy(&mut self, force: bool, reply: Reply<()>) -> bool {
        let state = self.m.state;
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
        done
    }

    /// Runs `run` on the driver for a started machine, with the machine's launch spec
    /// and the app's secrets, apart from the actor (which goes on taking commands);
    /// its outcome is the reply. `what` names the work in errors.
    fn apart<T, F, Fut>(&self, what: &'static str, reply: Reply<T>, run: F)
    where
        T: Send + 'static,
        F: FnOnce(Arc<dyn Driver>, String, LaunchSpec) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = std::result::Result<T, DriverError>> + Send,
    {
        let state = self.m.state;
        let Some(handle) = self.running_handle(state) else {
            let _ = reply.send(Err(not_now(what, state)));
            return;
        };
        let (driver, secrets_from, m, region) = (
            self.ctx.driver.clone(),
            self.ctx.secrets.clone(),
            self.m.clone(),
            self.ctx.region.clone(),
        );
        tokio::spawn(async move {
            let secrets = match secrets_from.for_machine(&m).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = reply.send(Err(OpError::Internal(format!(
                        "cannot give the command the app's secrets: {e}"
                    ))));
                    return;
                }
            };
            let spec = launch::spec(&m, &region, secrets, Vec::new());
            let _ = reply.send(run(driver, handle, spec).await.map_err(driver_error));
        });
    }

    /// Runs a command in a started machine, with the app's secrets in its environment.
    fn exec(
        &self,
        argv: Vec<String>,
        stdin: Option<String>,
        timeout: Duration,
        reply: Reply<ExecOutput>,
    ) {
        self.apart("exec", reply, move |driver, handle, spec| async move {
            driver
                .exec(&handle, &spec, &argv, stdin.as_deref(), timeout)
                .await
        });
    }

    /// Starts a console session's command in a started machine, with the app's secrets
    /// in its environment.
    fn console(&self, session: ConsoleSpec, reply: Reply<Console>) {
        self.apart("open a console in", reply, move |driver, handle, spec| async move {
            driver.console(&handle, &spec, &session).await
        });
    }

    /// Marks the machine cordoned (or not), so the proxy stops (or resumes) routing to it.
    async fn cordon(&mut self, cordoned: bool, reply: Reply<()>) {
        let mut next = self.m.clone();
        next.cordoned = cordoned;
        next.updated_at = clock::rfc3339_now();
        let change = MachineChange::Cordoned {
            machine_id: next.id.clone(),
            cordoned,
            at: next.updated_at.clone(),
        };
        let r = self.record(next, change).await;
        if r.is_ok() {
            self.publish_instance();
        }
        let _ = reply.send(r);
    }

    /// Lists the processes of a started machine, apart from the actor.
    fn ps(&self, reply: Reply<Vec<ProcessStat>>) {
        let state = self.m.state;
        let Some(handle) = self.running_handle(state) else {
            let _ = reply.send(Err(not_now("list processes of", state)));
            return;
        };
        let driver = self.ctx.driver.clone();
        tokio::spawn(async move {
            let _ = reply.send(driver.ps(&handle).await.map_err(driver_error));
        });
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
        let mut next = self.m.clone();
        next.config = config;
        next.updated_at = clock::rfc3339_now();
        let change = MachineChange::ConfigInPlace {
            machine_id: next.id.clone(),
            config: Box::new(next.config.clone()),
            at: next.updated_at.clone(),
        };
        self.record(next, change).await?;
        self.publish_instance();
        Ok(())
    }

    fn running_handle(&self, state: MachineState) -> Option<String> {
        (state == MachineState::Started)
            .then(|| self.running.as_ref().map(|p| p.handle.clone()))
            .flatten()
    }

    async fn record_version(
        &mut self,
        version: &str,
        prev: MachineState,
        skip_launch: bool,
    ) -> Result<()> {
        let event = MachineEvent {
            id: ids::ulid(),
            kind: EventKind::Update,
            status: MachineState::Replacing.as_str().into(),
            source: "user".into(),
            timestamp: clock::now_ms(),
            // What the update means to do next, for a restart that finds it cut short.
            request: Some(json!({ "previous_state": prev.as_str(), "skip_launch": skip_launch })),
        };
        let mut next = self.m.clone();
        next.instance_id = version.to_string();
        next.state = MachineState::Replacing;
        next.updated_at = clock::rfc3339_now();
        let change = MachineChange::NewVersion {
            machine_id: next.id.clone(),
            version: version.to_string(),
            config: Box::new(next.config.clone()),
            state: MachineState::Replacing,
            event: event.clone(),
            at: next.updated_at.clone(),
        };
        self.record(next, change).await?;
        self.publish(event.id);
        Ok(())
    }
}

/// A machine keeps the volume it was created with: a new config that names the mount
/// only by its volume's name or path (as a deploy from fly.toml does) gets the same
/// volume, and one that names another volume, or none, is refused as on Fly.
fn keep_volume(old: &MachineConfig, new: &mut MachineConfig) -> std::result::Result<(), String> {
    let held = old.mounts.as_deref().and_then(|m| m.first());
    let asked = new.mounts.as_deref_mut().and_then(|m| m.first_mut());
    match (held, asked) {
        (None, None) => Ok(()),
        (Some(h), Some(a)) if a.volume.is_empty() || a.volume == h.volume => {
            a.volume = h.volume.clone();
            Ok(())
        }
        (None, Some(_)) => Err("a machine's volume is given when it is created; an update cannot add one: create a new machine with the mount".into()),
        (Some(h), _) => Err(format!(
            "a machine's volume cannot be changed or removed by an update (it holds {}): destroy the machine and create a new one",
            h.volume
        )),
    }
}
