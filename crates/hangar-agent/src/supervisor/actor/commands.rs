//! The commands a machine's actor takes ([`MachineCmd`]): each checks that it is legal
//! in the current state, records its transition, replies, then acts.

use hangar_types::observed::MachineChange;
use hangar_types::EventKind;
use hangar_types::{MachineEvent, MachineState};
use serde_json::json;

use super::{driver_error, not_now, MachineActor, Result};
use crate::supervisor::{launch, MachineCmd, OpError};
use crate::{clock, ids};

impl MachineActor {
    /// Handles one command; returns true when the machine is now destroyed.
    pub(super) async fn handle(&mut self, cmd: MachineCmd) -> bool {
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
            },
            MachineCmd::Restart {
                signal,
                timeout,
                reply,
            } => match state {
                S::Started => {
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
                        .transition(S::Suspending, EventKind::Suspend, "user", None, None)
                        .await;
                    let ok = r.is_ok();
                    let _ = reply.send(r);
                    if ok {
                        self.drain(super::DEFAULT_STOP_TIMEOUT).await;
                        let r = match self.ctx.driver.suspend(&handle).await {
                            Ok(()) => {
                                self.transition(
                                    S::Suspended,
                                    EventKind::Suspend,
                                    "flyd",
                                    None,
                                    None,
                                )
                                .await
                            }
                            Err(e) => {
                                let req = json!({ "error": e.to_string() });
                                self.transition(
                                    S::Started,
                                    EventKind::Suspend,
                                    "flyd",
                                    Some(req),
                                    None,
                                )
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
                    let spec = launch::spec(&m, &region, secrets);
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
