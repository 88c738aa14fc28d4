//! Runtime drivers: what actually runs a machine.
//!
//! This crate owns the [`Driver`] trait, the seam between the machine supervisor and a
//! way of running machines, and the drivers themselves: [`process::ProcessDriver`] (host
//! processes, in the style of Nomad's raw_exec) today, containerd next. A driver does
//! what it is told and reports exits; it does not decide states, restart policy or what
//! the API answers — the supervisor does.

pub mod console;
pub mod containerd;
#[cfg(feature = "fake")]
pub mod fake;
pub mod files;
pub mod logs;
pub mod process;

use std::collections::BTreeMap;
use std::time::Duration;

use hangar_types::{MachineConfig, ProcessStat, Signal};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// Everything a driver needs to launch one version of a machine.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub machine_id: String,
    /// The app's name, for the machine's `.internal` host names.
    pub app_name: String,
    /// The machine's 6PN address.
    pub private_ip: String,
    pub config: MachineConfig,
    /// The platform's runtime variables (`FLY_*`, `PORT`, ...), merged over `config.env`.
    pub platform_env: BTreeMap<String, String>,
    /// The app's secrets: environment over `config.env` (under `platform_env`), and
    /// the source of `config.files[].secret_name`. Drivers keep them out of anything
    /// they write to disk.
    pub secrets: Secrets,
    /// Volumes to mount: a filesystem already mounted on this host, and where in the
    /// machine.
    pub volumes: Vec<VolumeMount>,
}

/// A volume's filesystem on the host (`source`), mounted in the machine at `path`; or,
/// for a raw volume, its block device (`source` is the device node), which the machine
/// gets as a device node at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub source: std::path::PathBuf,
    pub path: String,
    pub block_device: Option<BlockDevice>,
}

/// A block device's numbers, as the kernel knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockDevice {
    pub major: u64,
    pub minor: u64,
}

/// Secret values by name. `Debug` shows only the names.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(pub BTreeMap<String, String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl LaunchSpec {
    /// The machine's whole environment: `base`, then `config.env`, the first process's
    /// env, the secrets, and the platform's variables; with the names that came from
    /// secrets.
    pub fn environment(
        &self,
        base: BTreeMap<String, String>,
    ) -> (BTreeMap<String, String>, Vec<String>) {
        let mut env = base;
        if let Some(user_env) = &self.config.env {
            env.extend(user_env.clone());
        }
        if let Some(p) = self.config.processes.as_ref().and_then(|p| p.first()) {
            env.extend(p.env.clone().unwrap_or_default());
        }
        let ignore_secrets = self
            .config
            .processes
            .as_ref()
            .and_then(|p| p.first())
            .and_then(|p| p.ignore_app_secrets)
            .unwrap_or(false);
        let mut from_secrets = Vec::new();
        if !ignore_secrets {
            for (k, v) in &self.secrets.0 {
                if !self.platform_env.contains_key(k) {
                    env.insert(k.clone(), v.clone());
                    from_secrets.push(k.clone());
                }
            }
        }
        env.extend(self.platform_env.clone());
        (env, from_secrets)
    }
}

/// How a machine's main process ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    #[serde(default)]
    pub signal: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    /// Unix milliseconds.
    pub exited_at: i64,
    /// Set when the driver could not learn how the process ended.
    #[serde(default)]
    pub error: Option<String>,
}

impl ExitStatus {
    /// A clean exit: code 0 and no signal.
    pub fn is_success(&self) -> bool {
        self.exit_code == 0 && self.signal.is_none() && !self.oom_killed && self.error.is_none()
    }
}

/// A running machine: the handle to store (so a restarted server can find it again) and
/// a receiver that yields once, when its main process exits.
pub struct Running {
    pub handle: String,
    pub exited: oneshot::Receiver<ExitStatus>,
}

/// What a driver found when asked about a machine after a server restart.
pub enum Adopted {
    Running(oneshot::Receiver<ExitStatus>),
    Exited(ExitStatus),
}

/// Output of a command run inside a machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The machine's config cannot be run by this driver; the user must change it.
    #[error("{0}")]
    InvalidConfig(String),
    #[error("command timed out after {0:?}")]
    Timeout(Duration),
    #[error("machine is not running")]
    NotRunning,
    #[error("stored runtime handle is unreadable: {0}")]
    BadHandle(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl DriverError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        DriverError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Told when a machine has joined its private network and before its main process
/// starts: the machine's ID and 6PN address (so the host's DNS can be listening in the
/// machine's namespace by the time the machine first asks).
pub type AttachHook = std::sync::Arc<dyn Fn(&str, &str) + Send + Sync>;

/// A way of running machines. Handles are opaque strings the driver made itself.
#[async_trait::async_trait]
pub trait Driver: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Whom to tell as each machine joins its private network; drivers without one
    /// (the process driver) never call it.
    fn on_network_attach(&self, _hook: AttachHook) {}
    /// The machine's log file, in the format of [`logs`].
    fn log_file(&self, machine_id: &str) -> std::path::PathBuf;
    /// Where the machine's services listen, for the proxy.
    fn address(&self, _machine_id: &str) -> Option<std::net::IpAddr> {
        None
    }
    /// Refuses a config this driver cannot run, with a message for the user.
    fn check_config(&self, _config: &MachineConfig) -> Result<(), String> {
        Ok(())
    }
    /// Fetches what a config needs before the machine is created (its image), so a
    /// create with an image that cannot be had fails at once and leaves nothing behind.
    async fn prepare(&self, _config: &MachineConfig) -> Result<(), DriverError> {
        Ok(())
    }
    /// Launches the machine's main process.
    async fn start(&self, spec: &LaunchSpec) -> Result<Running, DriverError>;
    /// Finds a machine launched before a restart of the server.
    async fn adopt(&self, handle: &str) -> Result<Adopted, DriverError>;
    /// Delivers `signal` to the main process.
    async fn signal(&self, handle: &str, signal: Signal) -> Result<(), DriverError>;
    /// Kills every process of the machine.
    async fn kill_all(&self, handle: &str) -> Result<(), DriverError>;
    /// Freezes every process of the machine, keeping its memory.
    async fn suspend(&self, handle: &str) -> Result<(), DriverError>;
    /// Thaws a suspended machine.
    async fn resume(&self, handle: &str) -> Result<(), DriverError>;
    /// Runs a command inside the running machine.
    async fn exec(
        &self,
        handle: &str,
        spec: &LaunchSpec,
        argv: &[String],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Result<ExecOutput, DriverError>;
    /// Starts a console session's command in the running machine, with the machine's
    /// environment (and secrets), a terminal when asked for.
    async fn console(
        &self,
        _handle: &str,
        _spec: &LaunchSpec,
        _console: &console::ConsoleSpec,
    ) -> Result<console::Console, DriverError> {
        Err(DriverError::InvalidConfig(
            "console sessions are not supported by this driver".into(),
        ))
    }
    /// Lists the machine's processes.
    async fn ps(&self, handle: &str) -> Result<Vec<ProcessStat>, DriverError>;
    /// Removes everything the driver keeps for a machine.
    async fn destroy(&self, machine_id: &str) -> Result<(), DriverError>;
}
