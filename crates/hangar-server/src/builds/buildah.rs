//! Running buildah: `bud` from a Dockerfile with chroot isolation and vfs storage under
//! `<data-dir>/buildah`, `push` to the platform registry, then removing the local copy.
//! Every line buildah writes is handed to the caller as it comes.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

/// One build's inputs.
pub struct BuildSpec {
    pub context: PathBuf,
    /// Relative to the context.
    pub dockerfile: String,
    pub target: Option<String>,
    pub args: Vec<(String, String)>,
    pub no_cache: bool,
    pub image: String,
}

pub fn binary() -> Option<PathBuf> {
    ["/usr/bin/buildah", "/usr/local/bin/buildah"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn base(bin: &Path, storage: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("--root")
        .arg(storage.join("root"))
        .arg("--runroot")
        .arg(storage.join("run"))
        .arg("--storage-driver")
        .arg("vfs")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Runs one buildah command, sending its output lines; the last lines on failure.
async fn run(mut cmd: Command, what: &str, lines: &mpsc::Sender<String>) -> Result<(), String> {
    let mut child = cmd.spawn().map_err(|e| format!("start buildah: {e}"))?;
    let (tx, mut rx) = mpsc::channel::<String>(256);
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(pipe).lines();
            while let Ok(Some(l)) = r.next_line().await {
                if tx.send(l).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut tail: Vec<String> = Vec::new();
    while let Some(l) = rx.recv().await {
        tail.push(l.clone());
        if tail.len() > 5 {
            tail.remove(0);
        }
        let _ = lines.send(l).await;
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("wait for buildah: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let why = tail
        .iter()
        .rev()
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .or(tail.last())
        .cloned()
        .unwrap_or_else(|| format!("buildah exited with {status}"));
    Err(format!("{what} failed: {}", why.trim()))
}

/// Builds and pushes `spec.image` (plain HTTP to the loopback registry).
pub async fn build_and_push(
    bin: &Path,
    storage: &Path,
    spec: &BuildSpec,
    lines: &mpsc::Sender<String>,
) -> Result<(), String> {
    let mut bud = base(bin, storage);
    bud.arg("bud")
        .arg("--isolation")
        .arg("chroot")
        .arg("-f")
        .arg(spec.context.join(&spec.dockerfile))
        .arg("-t")
        .arg(&spec.image);
    if let Some(t) = &spec.target {
        bud.arg("--target").arg(t);
    }
    for (k, v) in &spec.args {
        bud.arg("--build-arg").arg(format!("{k}={v}"));
    }
    if spec.no_cache {
        bud.arg("--no-cache");
    }
    bud.arg(&spec.context);
    run(bud, "build", lines).await?;
    let mut push = base(bin, storage);
    push.arg("push")
        .arg("--tls-verify=false")
        .arg(&spec.image)
        .arg(format!("docker://{}", spec.image));
    let pushed = run(push, "push", lines).await;
    let mut rmi = base(bin, storage);
    rmi.arg("rmi").arg("-f").arg(&spec.image);
    let (quiet, _) = mpsc::channel(1);
    let _ = run(rmi, "remove the local image", &quiet).await;
    pushed
}
