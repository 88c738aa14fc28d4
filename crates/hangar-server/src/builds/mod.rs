//! Image builds on the server, like Fly's remote builders: a build context (tar.gz) is
//! unpacked, built with buildah from its Dockerfile, and pushed to the platform registry
//! ([`registry`]) as `<registry>/<app>:deployment-<id>`; the output streams back line by
//! line. One build runs at a time; the rest wait their turn.
//!
//! Taking the request and streaming the answer is `api::builds`'s job.

pub mod buildah;
pub mod registry;

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use hangar_types::build::BuildEvent;
use tokio::sync::{mpsc, Semaphore};

use crate::ids;

/// What a build request asks for, besides its context.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    pub dockerfile: String,
    pub target: Option<String>,
    pub args: Vec<(String, String)>,
    pub no_cache: bool,
    /// Tag `deployment-<label>` instead of a generated id.
    pub label: Option<String>,
}

#[derive(Clone)]
pub struct Builder {
    registry: Arc<registry::Registry>,
    work: PathBuf,
    storage: PathBuf,
    turn: Arc<Semaphore>,
}

fn log(message: impl Into<String>) -> BuildEvent {
    BuildEvent {
        kind: "log".into(),
        message: message.into(),
        image: None,
    }
}

fn failed(message: impl Into<String>) -> BuildEvent {
    BuildEvent {
        kind: "failed".into(),
        message: message.into(),
        image: None,
    }
}

/// A path inside the context, refusing ones that leave it.
fn inside(context: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    if p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return None;
    }
    Some(context.join(p))
}

/// A tag part made of what registries accept.
fn check_label(label: &str) -> Result<(), String> {
    let ok = !label.is_empty()
        && label.len() <= 100
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid image label {label:?}: use letters, digits, '-', '_' and '.'"
        ))
    }
}

impl Builder {
    pub fn new(registry_listen: SocketAddr, data_dir: &Path) -> Self {
        Self {
            registry: Arc::new(registry::Registry::new(registry_listen, data_dir)),
            work: data_dir.join("builds"),
            storage: data_dir.join("buildah"),
            turn: Arc::new(Semaphore::new(1)),
        }
    }

    /// Starts a build of `context` (tar.gz) for `app`; its events, ending with `done`
    /// (naming the image) or `failed`.
    pub fn start(
        &self,
        app: &str,
        context: bytes::Bytes,
        req: BuildRequest,
    ) -> mpsc::Receiver<BuildEvent> {
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        let app = app.to_string();
        tokio::spawn(async move {
            let end = match this.build(&app, context, req, &tx).await {
                Ok(image) => BuildEvent {
                    kind: "done".into(),
                    message: format!("pushed {image}"),
                    image: Some(image),
                },
                Err(e) => failed(e),
            };
            let _ = tx.send(end).await;
        });
        rx
    }

    async fn build(
        &self,
        app: &str,
        context: bytes::Bytes,
        req: BuildRequest,
        events: &mpsc::Sender<BuildEvent>,
    ) -> Result<String, String> {
        let bin = buildah::binary().ok_or_else(|| {
            "builds need buildah (apt install buildah) on the server; install it, or deploy a prebuilt image with --image".to_string()
        })?;
        let tag = match &req.label {
            Some(l) => {
                check_label(l)?;
                format!("deployment-{l}")
            }
            None => format!("deployment-{}", ids::ulid()),
        };
        let id = ids::ulid().to_lowercase();
        let dir = self.work.join(&id);
        let unpack_dir = dir.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            std::fs::create_dir_all(&unpack_dir).map_err(|e| format!("create build dir: {e}"))?;
            let gz = flate2::read::GzDecoder::new(std::io::Cursor::new(context));
            tar::Archive::new(gz)
                .unpack(&unpack_dir)
                .map_err(|e| format!("the build context is not a valid tar.gz: {e}"))
        })
        .await
        .map_err(|e| format!("unpack the build context: {e}"))??;
        let result = async {
            // A regular file, not a link that could name one outside the context.
            let dockerfile = inside(&dir, &req.dockerfile)
                .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
                .ok_or_else(|| {
                    format!(
                        "Dockerfile {:?} is not in the build context; add it, or set [build] dockerfile in fly.toml",
                        req.dockerfile
                    )
                })?;
            let waiting = self.turn.available_permits() == 0;
            if waiting {
                let _ = events.send(log("waiting for the build ahead of this one")).await;
            }
            let _turn = self.turn.acquire().await.map_err(|e| e.to_string())?;
            self.registry.ensure().await?;
            let image = format!("{}/{app}:{tag}", self.registry.host());
            let _ = events
                .send(log(format!("building {image} with buildah")))
                .await;
            let (line_tx, mut line_rx) = mpsc::channel::<String>(256);
            let forward = {
                let events = events.clone();
                tokio::spawn(async move {
                    while let Some(l) = line_rx.recv().await {
                        let _ = events.send(log(l)).await;
                    }
                })
            };
            let spec = buildah::BuildSpec {
                context: dir.clone(),
                dockerfile: dockerfile
                    .strip_prefix(&dir)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| req.dockerfile.clone()),
                target: req.target.clone(),
                args: req.args.clone(),
                no_cache: req.no_cache,
                image: image.clone(),
            };
            let built = buildah::build_and_push(&bin, &self.storage, &spec, &line_tx).await;
            drop(line_tx);
            let _ = forward.await;
            built.map(|_| image)
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result
    }
}
