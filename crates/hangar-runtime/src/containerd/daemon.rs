//! The private containerd: `hangar server` starts one with its own root, state, socket
//! and config under `<data-dir>/containerd`, unless one is already answering on that
//! socket (a containerd from an earlier server run keeps running, and so do its tasks).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::tonic::transport::Channel;

use crate::DriverError;

/// Where a containerd listens, and the channel to it.
pub struct Daemon {
    pub socket: PathBuf,
    pub channel: Channel,
    /// The version containerd reported.
    pub version: String,
}

fn io(context: &str, e: impl std::fmt::Display) -> DriverError {
    DriverError::io(context.to_string(), std::io::Error::other(e.to_string()))
}

async fn try_connect(socket: &Path) -> Option<(Channel, String)> {
    if !socket.exists() {
        return None;
    }
    let channel = containerd_client::connect(socket).await.ok()?;
    let v = VersionClient::new(channel.clone())
        .version(())
        .await
        .ok()?
        .into_inner();
    Some((channel, v.version))
}

/// Connects to the containerd at `socket`.
pub async fn connect(socket: &Path) -> Result<Daemon, DriverError> {
    let (channel, version) = try_connect(socket).await.ok_or_else(|| {
        io(
            &format!("connect to containerd at {}", socket.display()),
            "no answer",
        )
    })?;
    Ok(Daemon {
        socket: socket.to_path_buf(),
        channel,
        version,
    })
}

/// Connects to the private containerd under `dir`, starting it first if it is not
/// running. It runs in its own process group, so it outlives the server.
pub async fn start_private(dir: &Path, binary: &Path) -> Result<Daemon, DriverError> {
    let socket = dir.join("containerd.sock");
    if let Some((channel, version)) = try_connect(&socket).await {
        return Ok(Daemon {
            socket,
            channel,
            version,
        });
    }
    for sub in ["root", "state"] {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| DriverError::io(format!("create {}", dir.display()), e))?;
    }
    let config = dir.join("config.toml");
    let text = format!(
        "version = 2\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n[grpc]\n  address = {sock:?}\n\n[ttrpc]\n  address = {ttrpc:?}\n",
        root = dir.join("root"),
        state = dir.join("state"),
        sock = socket,
        ttrpc = dir.join("containerd.sock.ttrpc"),
    );
    std::fs::write(&config, text).map_err(|e| DriverError::io("write containerd config", e))?;
    let _ = std::fs::remove_file(&socket);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))
        .map_err(|e| DriverError::io("open containerd log", e))?;
    let err_log = log
        .try_clone()
        .map_err(|e| DriverError::io("open containerd log", e))?;
    std::process::Command::new(binary)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .process_group(0)
        .spawn()
        .map_err(|e| DriverError::io(format!("start {}", binary.display()), e))?;
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((channel, version)) = try_connect(&socket).await {
            return Ok(Daemon {
                socket,
                channel,
                version,
            });
        }
        if Instant::now() > until {
            return Err(io(
                "start containerd",
                format!(
                    "it did not answer within 20 s; see {}",
                    dir.join("containerd.log").display()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

use std::os::unix::process::CommandExt;

/// Keeps the private containerd running: checks it every second and starts it again if
/// it stopped answering. Its tasks live on in their shims and are picked up again.
pub async fn watch(dir: PathBuf, binary: PathBuf) {
    let socket = dir.join("containerd.sock");
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if try_connect(&socket).await.is_some() {
            continue;
        }
        tracing::warn!(socket = %socket.display(), "containerd stopped answering; starting it again");
        if let Err(e) = start_private(&dir, &binary).await {
            tracing::error!(error = %e, "cannot restart containerd");
        }
    }
}
