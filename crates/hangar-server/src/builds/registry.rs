//! The platform registry: a Distribution (`docker-registry`) child process on loopback,
//! storing under `<data-dir>/registry`, started on first need and stopped with the
//! server (it dies with its parent; a leftover from a killed server is replaced).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::Mutex;

pub struct Registry {
    pub listen: SocketAddr,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

fn binary() -> Option<PathBuf> {
    [
        "/usr/bin/docker-registry",
        "/usr/local/bin/docker-registry",
        "/usr/bin/registry",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

async fn answers(listen: SocketAddr) -> bool {
    let url = format!("http://{listen}/v2/");
    matches!(
        reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_millis(500))
            .send()
            .await,
        Ok(r) if r.status().is_success()
    )
}

/// Stops a registry a previous server run left behind (its pid file names it).
fn stop_leftover(dir: &Path) {
    let pid_file = dir.join("registry.pid");
    let Ok(pid) = std::fs::read_to_string(&pid_file) else {
        return;
    };
    if let Ok(pid) = pid.trim().parse::<i32>() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("registry") {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = std::fs::remove_file(pid_file);
}

impl Registry {
    pub fn new(listen: SocketAddr, data_dir: &Path) -> Self {
        Self {
            listen,
            dir: data_dir.join("registry"),
            child: Mutex::new(None),
        }
    }

    /// `host:port` images are pushed to.
    pub fn host(&self) -> String {
        self.listen.to_string()
    }

    /// Starts the registry unless it runs; an error saying what to install or change.
    pub async fn ensure(&self) -> Result<(), String> {
        let mut child = self.child.lock().await;
        if let Some(c) = child.as_mut() {
            if c.try_wait().ok().flatten().is_none() {
                return Ok(());
            }
        }
        let bin = binary().ok_or_else(|| {
            "the platform registry needs Distribution (`docker-registry`, apt install docker-registry); install it, or deploy a prebuilt image with --image".to_string()
        })?;
        std::fs::create_dir_all(self.dir.join("data"))
            .map_err(|e| format!("create {}: {e}", self.dir.display()))?;
        stop_leftover(&self.dir);
        let config = self.dir.join("config.yml");
        let text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {}\n",
            self.dir.join("data").display(),
            self.listen
        );
        std::fs::write(&config, text).map_err(|e| format!("write {}: {e}", config.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("registry.log"))
            .map_err(|e| format!("open the registry log: {e}"))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let spawned = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        if let Some(pid) = spawned.id() {
            let _ = std::fs::write(self.dir.join("registry.pid"), pid.to_string());
        }
        *child = Some(spawned);
        for _ in 0..100 {
            if answers(self.listen).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "the platform registry did not answer on {} within 10 s; see {} (is the port taken? choose another with --registry-listen)",
            self.listen,
            self.dir.join("registry.log").display()
        ))
    }
}
