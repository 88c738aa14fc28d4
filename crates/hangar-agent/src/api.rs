//! The one interface between the control plane and a host's agent: what the control
//! plane may ask of the machines on a host (check and prepare a config, create, the
//! lifecycle commands, exec, ps, metadata, cordon, watch a machine's state, its health
//! check results, its logs, a console session, a connection into a private network). The commands and their outcomes are plain data, so the
//! same interface can be carried over HTTP to an agent on another host; the
//! [`Supervisor`] answers it in-process.
//!
//! What flows the other way (the agent's observed state, secrets at start) is not here:
//! see [`crate::mirror::ControlPlane`] and [`crate::SecretSource`].

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;

use hangar_runtime::console::ConsoleSpec;
use hangar_runtime::logs::{self, LogCursor, LogLine};
use hangar_runtime::ExecOutput;
use hangar_store::MachineRecord;
use hangar_types::{CheckStatus, MachineConfig, MachineState, ProcessStat, Signal};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::gateway::GatewayInfo;
use crate::supervisor::{MachineCmd, Reply, Supervisor};
pub use crate::supervisor::{OpError, Snapshot};
use crate::tunnel::{PrivateTarget, Tunnel};
use crate::volumes::{VolumeError, VolumeOp, VolumeReply};
pub use hangar_net::wireguard::GatewayPeer;

/// A command to one machine. Each says in which states it is legal (the agent's
/// actor checks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    Start,
    Stop {
        signal: Option<Signal>,
        timeout: Option<Duration>,
    },
    Restart {
        signal: Option<Signal>,
        timeout: Option<Duration>,
    },
    Suspend,
    Signal {
        signal: Signal,
    },
    Update {
        config: Box<MachineConfig>,
        skip_launch: bool,
    },
    Destroy {
        force: bool,
    },
    Exec {
        argv: Vec<String>,
        stdin: Option<String>,
        timeout: Duration,
    },
    Ps,
    SetMetadata {
        changes: Vec<(String, Option<String>)>,
        machine_version: Option<String>,
    },
    Cordon {
        cordoned: bool,
    },
}

/// What a command came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "value", rename_all = "snake_case")]
pub enum Outcome {
    /// Done, with nothing to report.
    Done,
    /// A start, with the state the machine was in before.
    Started {
        previous: MachineState,
    },
    /// An update, with the new version.
    Updated {
        version: String,
    },
    Exec(ExecOutput),
    Processes(Vec<ProcessStat>),
}

/// Lines of a machine's log and where to read on from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogRead {
    pub lines: Vec<LogLine>,
    pub cursor: Option<LogCursor>,
}

/// A host's agent, as the control plane sees it.
#[async_trait::async_trait]
pub trait AgentApi: Send + Sync {
    /// Whether this host's driver can run the config (`Invalid` says what not).
    async fn check_config(&self, config: &MachineConfig) -> Result<(), OpError>;
    /// Fetches what the config needs (its image) before the machine is stored.
    async fn prepare(&self, config: &MachineConfig) -> Result<(), OpError>;
    /// Takes a machine the control plane has stored; launches it unless `skip_launch`.
    async fn create(&self, machine: MachineRecord, skip_launch: bool) -> Result<(), OpError>;
    async fn command(&self, machine_id: &str, command: Command) -> Result<Outcome, OpError>;
    /// The machine's state as it changes; `None` once it is destroyed.
    async fn watch(&self, machine_id: &str) -> Option<watch::Receiver<Snapshot>>;
    /// The latest health check results of each machine named.
    async fn checks(&self, machine_ids: &[String]) -> HashMap<String, Vec<CheckStatus>>;
    /// With no cursor, the retained lines of the machine's log; with one, the lines
    /// written since.
    async fn logs(&self, machine_id: &str, after: Option<LogCursor>) -> Result<LogRead, OpError>;
    /// Makes, grows, measures or removes a volume's blocks on this host.
    async fn volume(&self, op: &VolumeOp) -> Result<VolumeReply, VolumeError>;
    /// Where a private name leads on an org's network, without connecting.
    async fn resolve_private(&self, org: u16, host: &str) -> Result<Vec<Ipv6Addr>, OpError>;
    /// A TCP connection from this host to a place on an org's private network.
    async fn dial_private(&self, target: &PrivateTarget) -> Result<Tunnel, OpError>;
    /// A console session in a started machine, as a stream of console frames
    /// (`hangar_types::console`).
    async fn console(&self, machine_id: &str, session: &ConsoleSpec) -> Result<Tunnel, OpError>;
    /// Makes this host's WireGuard gateway carry exactly `peers`; what their configs
    /// need of it.
    async fn wireguard(&self, peers: Vec<GatewayPeer>) -> Result<GatewayInfo, OpError>;
}

impl Supervisor {
    /// Sends a command whose only answer is that it was done.
    async fn send_done(
        &self,
        machine_id: &str,
        make: impl FnOnce(Reply<()>) -> MachineCmd,
    ) -> Result<Outcome, OpError> {
        self.send(machine_id, make).await.map(|()| Outcome::Done)
    }
}

#[async_trait::async_trait]
impl AgentApi for Supervisor {
    async fn check_config(&self, config: &MachineConfig) -> Result<(), OpError> {
        self.driver().check_config(config).map_err(OpError::Invalid)
    }

    async fn prepare(&self, config: &MachineConfig) -> Result<(), OpError> {
        self.driver().prepare(config).await.map_err(|e| match e {
            hangar_runtime::DriverError::InvalidConfig(m) => OpError::Invalid(m),
            e => OpError::Internal(e.to_string()),
        })
    }

    async fn create(&self, machine: MachineRecord, skip_launch: bool) -> Result<(), OpError> {
        Supervisor::create(self, machine, skip_launch).await
    }

    async fn command(&self, id: &str, command: Command) -> Result<Outcome, OpError> {
        use Command as C;
        use MachineCmd as M;
        match command {
            C::Start => self
                .send(id, |reply| M::Start { reply })
                .await
                .map(|previous| Outcome::Started { previous }),
            C::Stop { signal, timeout } => {
                self.send_done(id, |reply| M::Stop {
                    signal,
                    timeout,
                    reply,
                })
                .await
            }
            C::Restart { signal, timeout } => {
                self.send_done(id, |reply| M::Restart {
                    signal,
                    timeout,
                    reply,
                })
                .await
            }
            C::Suspend => self.send_done(id, |reply| M::Suspend { reply }).await,
            C::Signal { signal } => {
                self.send_done(id, |reply| M::Signal { signal, reply })
                    .await
            }
            C::Update {
                config,
                skip_launch,
            } => self
                .send(id, |reply| M::Update {
                    config,
                    skip_launch,
                    reply,
                })
                .await
                .map(|version| Outcome::Updated { version }),
            C::Destroy { force } => {
                self.send_done(id, |reply| M::Destroy { force, reply })
                    .await
            }
            C::Exec {
                argv,
                stdin,
                timeout,
            } => self
                .send(id, |reply| M::Exec {
                    argv,
                    stdin,
                    timeout,
                    reply,
                })
                .await
                .map(Outcome::Exec),
            C::Ps => self
                .send(id, |reply| M::Ps { reply })
                .await
                .map(Outcome::Processes),
            C::SetMetadata {
                changes,
                machine_version,
            } => {
                self.send_done(id, |reply| M::SetMetadata {
                    changes,
                    machine_version,
                    reply,
                })
                .await
            }
            C::Cordon { cordoned } => {
                self.send_done(id, |reply| M::Cordon { cordoned, reply })
                    .await
            }
        }
    }

    async fn watch(&self, machine_id: &str) -> Option<watch::Receiver<Snapshot>> {
        Supervisor::watch(self, machine_id)
    }

    async fn checks(&self, machine_ids: &[String]) -> HashMap<String, Vec<CheckStatus>> {
        machine_ids
            .iter()
            .map(|id| (id.clone(), self.check_results(id)))
            .collect()
    }

    async fn logs(&self, machine_id: &str, after: Option<LogCursor>) -> Result<LogRead, OpError> {
        let path = self.driver().log_file(machine_id);
        tokio::task::spawn_blocking(move || match after {
            None => {
                let (lines, cursor) = logs::read_all(&path);
                LogRead { lines, cursor }
            }
            Some(c) => {
                let mut cursor = Some(c);
                let lines = logs::read_new(&path, &mut cursor);
                LogRead { lines, cursor }
            }
        })
        .await
        .map_err(|e| OpError::Internal(format!("read the machine's log: {e}")))
    }

    async fn volume(&self, op: &VolumeOp) -> Result<VolumeReply, VolumeError> {
        self.volumes().apply(op).await
    }

    async fn resolve_private(&self, org: u16, host: &str) -> Result<Vec<Ipv6Addr>, OpError> {
        crate::tunnel::resolve(&self.private_view(), org, host, self.region())
    }

    async fn console(&self, id: &str, session: &ConsoleSpec) -> Result<Tunnel, OpError> {
        let session = session.clone();
        self.send(id, |reply| MachineCmd::Console { session, reply })
            .await
            .map(crate::console::framed)
    }

    async fn dial_private(&self, target: &PrivateTarget) -> Result<Tunnel, OpError> {
        let view = self.private_view();
        let (stream, to) = crate::tunnel::dial(&view, target, self.region()).await?;
        tracing::debug!(host = %target.host, to = %to, "private connection opened");
        Ok(Box::new(stream))
    }

    async fn wireguard(&self, peers: Vec<GatewayPeer>) -> Result<GatewayInfo, OpError> {
        match self.gateway() {
            Some(g) => g.set(peers).await,
            None => Err(OpError::Unavailable(
                "this host is not a WireGuard gateway".into(),
            )),
        }
    }
}

/// The control plane's handle on a host's agent, with a typed call per command.
/// Cheap to clone.
#[derive(Clone)]
pub struct Agent(pub Arc<dyn AgentApi>);

/// An outcome a command never has: the agent answered out of turn.
fn unexpected(o: Outcome) -> OpError {
    OpError::Internal(format!("the agent answered with {o:?}"))
}

impl Agent {
    pub fn api(&self) -> &dyn AgentApi {
        self.0.as_ref()
    }

    async fn done(&self, id: &str, command: Command) -> Result<(), OpError> {
        match self.0.command(id, command).await? {
            Outcome::Done => Ok(()),
            o => Err(unexpected(o)),
        }
    }

    /// Replies with the state the machine was in before.
    pub async fn start(&self, id: &str) -> Result<MachineState, OpError> {
        match self.0.command(id, Command::Start).await? {
            Outcome::Started { previous } => Ok(previous),
            o => Err(unexpected(o)),
        }
    }

    pub async fn stop(
        &self,
        id: &str,
        signal: Option<Signal>,
        timeout: Option<Duration>,
    ) -> Result<(), OpError> {
        self.done(id, Command::Stop { signal, timeout }).await
    }

    pub async fn restart(
        &self,
        id: &str,
        signal: Option<Signal>,
        timeout: Option<Duration>,
    ) -> Result<(), OpError> {
        self.done(id, Command::Restart { signal, timeout }).await
    }

    pub async fn suspend(&self, id: &str) -> Result<(), OpError> {
        self.done(id, Command::Suspend).await
    }

    pub async fn signal(&self, id: &str, signal: Signal) -> Result<(), OpError> {
        self.done(id, Command::Signal { signal }).await
    }

    /// Replies with the new version.
    pub async fn update(
        &self,
        id: &str,
        config: MachineConfig,
        skip_launch: bool,
    ) -> Result<String, OpError> {
        let command = Command::Update {
            config: Box::new(config),
            skip_launch,
        };
        match self.0.command(id, command).await? {
            Outcome::Updated { version } => Ok(version),
            o => Err(unexpected(o)),
        }
    }

    pub async fn destroy(&self, id: &str, force: bool) -> Result<(), OpError> {
        self.done(id, Command::Destroy { force }).await
    }

    pub async fn exec(
        &self,
        id: &str,
        argv: Vec<String>,
        stdin: Option<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, OpError> {
        let command = Command::Exec {
            argv,
            stdin,
            timeout,
        };
        match self.0.command(id, command).await? {
            Outcome::Exec(out) => Ok(out),
            o => Err(unexpected(o)),
        }
    }

    pub async fn ps(&self, id: &str) -> Result<Vec<ProcessStat>, OpError> {
        match self.0.command(id, Command::Ps).await? {
            Outcome::Processes(list) => Ok(list),
            o => Err(unexpected(o)),
        }
    }

    pub async fn set_metadata(
        &self,
        id: &str,
        changes: Vec<(String, Option<String>)>,
        machine_version: Option<String>,
    ) -> Result<(), OpError> {
        self.done(
            id,
            Command::SetMetadata {
                changes,
                machine_version,
            },
        )
        .await
    }

    pub async fn cordon(&self, id: &str, cordoned: bool) -> Result<(), OpError> {
        self.done(id, Command::Cordon { cordoned }).await
    }

    /// The machine's state now, if it is not destroyed.
    pub async fn state(&self, id: &str) -> Option<MachineState> {
        self.0.watch(id).await.map(|rx| rx.borrow().state)
    }

    pub async fn check_results(&self, id: &str) -> Vec<CheckStatus> {
        self.0
            .checks(&[id.to_string()])
            .await
            .remove(id)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_plain_data() {
        let config: MachineConfig =
            serde_json::from_value(serde_json::json!({"image": "busybox"})).expect("config");
        for c in [
            Command::Start,
            Command::Stop {
                signal: Some(Signal::SIGTERM),
                timeout: Some(Duration::from_millis(1500)),
            },
            Command::Update {
                config: Box::new(config),
                skip_launch: true,
            },
            Command::Exec {
                argv: vec!["ls".into()],
                stdin: None,
                timeout: Duration::from_secs(3),
            },
            Command::SetMetadata {
                changes: vec![("k".into(), None)],
                machine_version: Some("v".into()),
            },
        ] {
            let json = serde_json::to_string(&c).expect("encode");
            let back: Command = serde_json::from_str(&json).expect("decode");
            assert_eq!(back, c, "{json}");
        }
    }
}
