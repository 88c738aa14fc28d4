//! The process driver: each machine is a host process, launched through a shim so it
//! outlives the server (Nomad raw_exec style; for laptops and hosts without containerd).
//!
//! Layout under the driver's root, per machine: `rootfs/` (the working directory),
//! `logs/machine.log` (stdout and stderr, see [`crate::logs`]), `run/` (the shim's spec
//! and `exit.json`).
//! The command is `config.init.exec`, else `init.entrypoint` + `init.cmd`; the image is
//! recorded but not pulled. Stop, signal, suspend (SIGSTOP of the process group) and
//! resume (SIGCONT) act on the host process group; isolation is that of a host process.

mod console;
pub mod procfs;
pub mod shim;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hangar_types::{ProcessStat, Signal};
use nix::sys::signal::{kill, Signal as NixSignal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::{Adopted, Driver, DriverError, ExecOutput, ExitStatus, LaunchSpec, Running};
use shim::{ShimReply, ShimSpec, EXIT_FILE, SPEC_FILE};

/// What the process driver stores to find a machine again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Handle {
    pid: i32,
    starttime: u64,
    shim_pid: i32,
    run_dir: PathBuf,
}

pub struct ProcessDriver {
    root: PathBuf,
    /// The program that runs the shim (`<program> shim <dir>`): the `hangar` binary.
    shim_program: PathBuf,
}

/// How often an adopted machine (not our child any more) is checked for an exit.
const ADOPTED_POLL: Duration = Duration::from_millis(100);

impl ProcessDriver {
    pub fn new(root: PathBuf, shim_program: PathBuf) -> Self {
        Self { root, shim_program }
    }

    fn machine_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn argv(spec: &LaunchSpec) -> Result<Vec<String>, DriverError> {
        // The first of config.processes overrides init, as on Fly.
        let init = &spec.config.init;
        let process = spec.config.processes.as_ref().and_then(|p| p.first());
        let exec = process
            .and_then(|p| p.exec.clone())
            .or_else(|| init.exec.clone());
        let entrypoint = process
            .and_then(|p| p.entrypoint.clone())
            .or_else(|| init.entrypoint.clone());
        let cmd = process
            .and_then(|p| p.cmd.clone())
            .or_else(|| init.cmd.clone());
        let argv: Vec<String> = match exec.filter(|e| !e.is_empty()) {
            Some(exec) => exec,
            None => entrypoint
                .into_iter()
                .flatten()
                .chain(cmd.into_iter().flatten())
                .collect(),
        };
        if argv.is_empty() || argv[0].is_empty() {
            return Err(DriverError::InvalidConfig(
                "the process driver runs config.init.exec (or init.entrypoint + init.cmd) on the host; give a command, e.g. \"init\": {\"exec\": [\"/bin/sleep\", \"inf\"]}".into(),
            ));
        }
        Ok(argv)
    }

    /// The machine's environment, split into what may be written to its run directory
    /// and the values that came from secrets (handed to the shim through a pipe).
    /// `argv` as a command beside the machine's processes: in its directory, with its
    /// environment and secrets and nothing of the server's.
    fn command_in(&self, spec: &LaunchSpec, argv: &[String]) -> Result<Command, DriverError> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| DriverError::InvalidConfig("command is empty".into()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs({
                let (mut env, secret_env) = Self::env(spec);
                env.extend(secret_env);
                env
            })
            .current_dir(self.machine_dir(&spec.machine_id).join("rootfs"));
        Ok(cmd)
    }

    fn env(spec: &LaunchSpec) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let mut base = BTreeMap::new();
        for key in ["PATH", "HOME", "LANG", "TZ"] {
            if let Ok(v) = std::env::var(key) {
                base.insert(key.to_string(), v);
            }
        }
        base.entry("PATH".into()).or_insert_with(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        let (mut env, from_secrets) = spec.environment(base);
        let secret = from_secrets
            .into_iter()
            .filter_map(|k| env.remove_entry(&k))
            .collect();
        (env, secret)
    }

    /// Makes the machine's directories, writes its `[[files]]` and the shim's spec (a
    /// previous run's exit record goes); returns the run directory and the environment
    /// from secrets, which is never written there.
    async fn prepare_run(
        &self,
        spec: &LaunchSpec,
        argv: Vec<String>,
    ) -> Result<(PathBuf, BTreeMap<String, String>), DriverError> {
        let dir = self.machine_dir(&spec.machine_id);
        let (run_dir, rootfs, logs) = (dir.join("run"), dir.join("rootfs"), dir.join("logs"));
        for d in [&run_dir, &rootfs, &logs] {
            tokio::fs::create_dir_all(d)
                .await
                .map_err(|e| DriverError::io(format!("create {}", d.display()), e))?;
        }
        let _ = tokio::fs::remove_file(run_dir.join(EXIT_FILE)).await;
        crate::files::write(
            &rootfs,
            spec.config.files.as_deref().unwrap_or_default(),
            &spec.secrets,
        )?;
        link_volumes(&rootfs, &spec.volumes)?;
        let (env, secret_env) = Self::env(spec);
        let shim_spec = ShimSpec {
            argv,
            env,
            cwd: rootfs,
            log: self.log_file(&spec.machine_id),
        };
        let spec_bytes = serde_json::to_vec(&shim_spec)
            .map_err(|e| DriverError::io("encode launch spec", e.into()))?;
        tokio::fs::write(run_dir.join(SPEC_FILE), spec_bytes)
            .await
            .map_err(|e| DriverError::io("write launch spec", e))?;
        Ok((run_dir, secret_env))
    }

    /// Starts the shim for `run_dir` in a process group of its own, and hands it the
    /// environment from secrets through its stdin.
    async fn spawn_shim(
        &self,
        run_dir: &Path,
        secret_env: &BTreeMap<String, String>,
    ) -> Result<Child, DriverError> {
        let mut child = Command::new(&self.shim_program)
            .arg("shim")
            .arg(run_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                DriverError::io(format!("start shim {}", self.shim_program.display()), e)
            })?;
        if let Some(mut pipe) = child.stdin.take() {
            let line = serde_json::to_vec(secret_env)
                .map_err(|e| DriverError::io("encode the secrets", e.into()))?;
            pipe.write_all(&line)
                .await
                .map_err(|e| DriverError::io("hand secrets to the shim", e))?;
            drop(pipe);
        }
        Ok(child)
    }
}

/// The PID and start time of the machine's process, from the shim's one line of reply;
/// a shim that could not start it is waited for, and its error returned.
async fn shim_reply(child: &mut Child) -> Result<(i32, u64), DriverError> {
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out)
            .read_line(&mut line)
            .await
            .map_err(|e| DriverError::io("read shim reply", e))?;
    }
    let reply: ShimReply = serde_json::from_str(line.trim()).map_err(|_| {
        DriverError::io(
            "shim gave no reply",
            std::io::Error::other(format!("got {:?}", line.trim())),
        )
    })?;
    match reply {
        ShimReply::Started { pid, starttime } => Ok((pid, starttime)),
        ShimReply::Failed { error } => {
            let _ = child.wait().await;
            Err(DriverError::InvalidConfig(error))
        }
    }
}

fn parse_handle(handle: &str) -> Result<Handle, DriverError> {
    serde_json::from_str(handle).map_err(|e| DriverError::BadHandle(e.to_string()))
}

fn send(pid: i32, sig: i32) -> Result<(), DriverError> {
    let sig = NixSignal::try_from(sig)
        .map_err(|_| DriverError::InvalidConfig(format!("unsupported signal {sig}")))?;
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(DriverError::io(format!("send {sig} to {pid}"), e.into())),
    }
}

async fn read_exit(run_dir: &Path) -> Option<ExitStatus> {
    let bytes = tokio::fs::read(run_dir.join(EXIT_FILE)).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// After the main process is gone, the shim writes `exit.json`; give it a moment.
async fn exit_after_shim(run_dir: &Path) -> ExitStatus {
    for _ in 0..40 {
        if let Some(st) = read_exit(run_dir).await {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ExitStatus {
        exit_code: -1,
        exited_at: shim::now_ms(),
        error: Some("the machine's shim exited without recording how the process ended".into()),
        ..Default::default()
    }
}

fn watch_adopted(h: Handle) -> oneshot::Receiver<ExitStatus> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        while procfs::is_alive(h.pid, h.starttime) {
            tokio::time::sleep(ADOPTED_POLL).await;
        }
        let _ = tx.send(exit_after_shim(&h.run_dir).await);
    });
    rx
}

#[async_trait::async_trait]
impl Driver for ProcessDriver {
    fn name(&self) -> &'static str {
        "process"
    }

    /// Host processes listen on the host.
    fn address(&self, _machine_id: &str) -> Option<std::net::IpAddr> {
        Some(std::net::Ipv4Addr::LOCALHOST.into())
    }

    fn log_file(&self, machine_id: &str) -> PathBuf {
        self.machine_dir(machine_id)
            .join("logs")
            .join("machine.log")
    }

    fn check_config(&self, config: &hangar_types::MachineConfig) -> Result<(), String> {
        let spec = LaunchSpec {
            machine_id: String::new(),
            app_name: String::new(),
            private_ip: String::new(),
            config: config.clone(),
            platform_env: BTreeMap::new(),
            secrets: Default::default(),
            volumes: Vec::new(),
        };
        Self::argv(&spec).map_err(|e| e.to_string())?;
        crate::files::check(config.files.as_deref().unwrap_or_default())
    }

    async fn start(&self, spec: &LaunchSpec) -> Result<Running, DriverError> {
        let argv = Self::argv(spec)?;
        let (run_dir, secret_env) = self.prepare_run(spec, argv).await?;
        let mut child = self.spawn_shim(&run_dir, &secret_env).await?;
        let shim_pid = child.id().map(|p| p as i32).unwrap_or(0);
        let (pid, starttime) = shim_reply(&mut child).await?;
        let handle = Handle {
            pid,
            starttime,
            shim_pid,
            run_dir: run_dir.clone(),
        };
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let _ = child.wait().await;
            let _ = tx.send(exit_after_shim(&run_dir).await);
        });
        Ok(Running {
            handle: serde_json::to_string(&handle)
                .map_err(|e| DriverError::io("encode handle", e.into()))?,
            exited: rx,
        })
    }

    async fn adopt(&self, handle: &str) -> Result<Adopted, DriverError> {
        let h = parse_handle(handle)?;
        if let Some(status) = read_exit(&h.run_dir).await {
            return Ok(Adopted::Exited(status));
        }
        if procfs::is_alive(h.pid, h.starttime) {
            return Ok(Adopted::Running(watch_adopted(h)));
        }
        Ok(Adopted::Exited(exit_after_shim(&h.run_dir).await))
    }

    async fn signal(&self, handle: &str, signal: Signal) -> Result<(), DriverError> {
        let h = parse_handle(handle)?;
        send(h.pid, signal.number())
    }

    async fn kill_all(&self, handle: &str) -> Result<(), DriverError> {
        let h = parse_handle(handle)?;
        send(-h.pid, libc_sig::SIGCONT)?;
        send(-h.pid, Signal::SIGKILL.number())
    }

    async fn suspend(&self, handle: &str) -> Result<(), DriverError> {
        let h = parse_handle(handle)?;
        send(-h.pid, libc_sig::SIGSTOP)
    }

    async fn resume(&self, handle: &str) -> Result<(), DriverError> {
        let h = parse_handle(handle)?;
        send(-h.pid, libc_sig::SIGCONT)
    }

    async fn exec(
        &self,
        handle: &str,
        spec: &LaunchSpec,
        argv: &[String],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Result<ExecOutput, DriverError> {
        let h = parse_handle(handle)?;
        if !procfs::is_alive(h.pid, h.starttime) {
            return Err(DriverError::NotRunning);
        }
        let program = argv.first().cloned().unwrap_or_default();
        let mut child = self
            .command_in(spec, argv)?
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DriverError::InvalidConfig(format!("cannot run {program:?}: {e}")))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let input = input.to_string();
            tokio::spawn(async move {
                let _ = pipe.write_all(input.as_bytes()).await;
            });
        }
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        let run = async {
            let (mut o, mut e) = (Vec::new(), Vec::new());
            if let Some(s) = out.as_mut() {
                let _ = s.read_to_end(&mut o).await;
            }
            if let Some(s) = err.as_mut() {
                let _ = s.read_to_end(&mut e).await;
            }
            let status = child.wait().await;
            (status, o, e)
        };
        let (status, o, e) = tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| DriverError::Timeout(timeout))?;
        let status = status.map_err(|e| DriverError::io("wait for command", e))?;
        use std::os::unix::process::ExitStatusExt;
        Ok(ExecOutput {
            exit_code: status.code().unwrap_or(128 + status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&o).into_owned(),
            stderr: String::from_utf8_lossy(&e).into_owned(),
        })
    }

    async fn console(
        &self,
        handle: &str,
        spec: &LaunchSpec,
        session: &crate::console::ConsoleSpec,
    ) -> Result<crate::console::Console, DriverError> {
        self.console_in(handle, spec, session).await
    }

    async fn ps(&self, handle: &str) -> Result<Vec<ProcessStat>, DriverError> {
        let h = parse_handle(handle)?;
        if !procfs::is_alive(h.pid, h.starttime) {
            return Err(DriverError::NotRunning);
        }
        Ok(
            tokio::task::spawn_blocking(move || procfs::processes_in_group(h.pid))
                .await
                .unwrap_or_default(),
        )
    }

    async fn destroy(&self, machine_id: &str) -> Result<(), DriverError> {
        let dir = self.machine_dir(machine_id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DriverError::io(format!("remove {}", dir.display()), e)),
        }
    }
}

/// Job-control signals, which the API's signal type does not offer to users.
mod libc_sig {
    pub const SIGCONT: i32 = 18;
    pub const SIGSTOP: i32 = 19;
}

/// A process has no mount namespace of its own: each volume's filesystem is given to
/// it as a symlink at its mount path under the machine's working directory
/// (`rootfs/data` for `/data`), which a relative path such as `data/file` reaches.
fn link_volumes(rootfs: &Path, volumes: &[crate::VolumeMount]) -> Result<(), DriverError> {
    for v in volumes {
        let link = rootfs.join(v.path.trim_start_matches('/'));
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| DriverError::io(format!("create {}", parent.display()), e))?;
        }
        match std::fs::read_link(&link) {
            Ok(to) if to == v.source => continue,
            Ok(_) => std::fs::remove_file(&link)
                .map_err(|e| DriverError::io(format!("replace {}", link.display()), e))?,
            Err(_) if link.exists() => {
                return Err(DriverError::InvalidConfig(format!(
                    "cannot mount a volume at {}: the machine already has a file there",
                    v.path
                )))
            }
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&v.source, &link)
            .map_err(|e| DriverError::io(format!("link {}", link.display()), e))?;
    }
    Ok(())
}
