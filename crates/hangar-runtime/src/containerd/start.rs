//! A machine's start on containerd: a fresh root filesystem snapshot of its image, the
//! files the platform writes into it (`/etc/hosts`, `resolv.conf`, `hostname` and the
//! machine's `[[files]]`), its private network, the container with its runtime spec
//! (started through the init, with a file of its secrets), and the task.
//!
//! Watching the task for its exit, and removing what a run leaves behind, belong to the
//! driver itself (`mod.rs`), not to this module.

use std::path::{Path, PathBuf};
use std::time::Instant;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::PrepareSnapshotRequest;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, StartRequest,
};
use containerd_client::tonic;
use containerd_client::types::Mount;

use super::image::{grpc, ImageInfo};
use super::{any, handle_of, init, spec, ContainerdDriver};
use crate::{Driver, DriverError, LaunchSpec, Running};

const RUNTIME: &str = "io.containerd.runc.v2";
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

impl ContainerdDriver {
    /// Starts the machine `spec` describes, in its turn; whatever a previous run left
    /// is removed first.
    pub(super) async fn start_machine(&self, spec: &LaunchSpec) -> Result<Running, DriverError> {
        let id = spec.machine_id.clone();
        let began = Instant::now();
        let phase = |what: &str| {
            tracing::debug!(machine = %id, ms = began.elapsed().as_millis() as u64, "start: {what}");
        };
        let image = self.ctx.ensure_image(&spec.config.image).await?;
        phase("image ready");
        let turn = self.turn(&id);
        let _turn = turn.lock().await;
        let dir = self.machine_dir(&id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| DriverError::io(format!("create {}", dir.display()), e))?;
        self.remove_container(&id).await;
        phase("previous run removed");
        let mounts = self.prepare_rootfs(&id, &image).await?;
        phase("root filesystem prepared");
        let root = writable_dir(&mounts).ok_or_else(|| {
            DriverError::io(
                "find the machine's root filesystem",
                std::io::Error::other("no writable layer"),
            )
        })?;
        write_platform_files(&root, spec)?;
        let attachment = self
            .network
            .attach(&id, &spec.private_ip)
            .await
            .map_err(|e| {
                DriverError::io(
                    "put the machine on its private network",
                    std::io::Error::other(e.to_string()),
                )
            })?;
        if let Some(hook) = self.attach_hook.get() {
            hook(&id, &spec.private_ip);
        }
        phase("network attached");
        let secrets_dir = init::secrets_dir(&self.root);
        let runtime_spec =
            self.runtime_spec_with_init(spec, &image, &attachment.netns, &secrets_dir)?;
        self.create_container(&id, &image, &runtime_spec).await?;
        phase("container created");
        self.create_task(&id, mounts).await?;
        phase("task created");
        let exited = self.watch_exit(&id);
        self.start_task(&id).await?;
        phase("task started");
        // The running machine keeps its bind-mounted copy; the host's goes.
        init::remove_secrets(&secrets_dir, &id);
        Ok(Running {
            handle: handle_of(&id),
            exited,
        })
    }

    /// A writable snapshot of the image for the machine's root filesystem, keyed by the
    /// machine ID; returns its mounts.
    async fn prepare_rootfs(&self, id: &str, image: &ImageInfo) -> Result<Vec<Mount>, DriverError> {
        Ok(SnapshotsClient::new(self.ctx.channel.clone())
            .prepare(self.ctx.req(PrepareSnapshotRequest {
                snapshotter: self.ctx.snapshotter.clone(),
                key: id.to_string(),
                parent: image.chain_id.clone(),
                labels: Default::default(),
            }))
            .await
            .map_err(|s| grpc("prepare rootfs", s))?
            .into_inner()
            .mounts)
    }

    /// The machine's runtime spec. Every machine starts through the init, so secrets set
    /// later reach commands exec'd into it the same way; the file of its secrets is
    /// written under `secrets_dir` now.
    fn runtime_spec_with_init(
        &self,
        spec: &LaunchSpec,
        image: &ImageInfo,
        netns: &Path,
        secrets_dir: &Path,
    ) -> Result<serde_json::Value, DriverError> {
        let secret_env = spec::secret_env(spec);
        let (uid, gid) = spec::user(spec, image);
        let init_path = init::install(&self.root.join("bin"))?;
        let secrets_file =
            init::write_secrets(secrets_dir, &spec.machine_id, &secret_env, uid, gid)?;
        Ok(spec::runtime_spec(
            spec,
            image,
            netns,
            Some(spec::InitMounts {
                init: &init_path,
                secrets: &secrets_file,
            }),
        ))
    }

    async fn create_container(
        &self,
        id: &str,
        image: &ImageInfo,
        runtime_spec: &serde_json::Value,
    ) -> Result<(), DriverError> {
        let container = Container {
            id: id.to_string(),
            image: image.resolved.clone(),
            runtime: Some(Runtime {
                name: RUNTIME.into(),
                options: None,
            }),
            spec: Some(any(SPEC_TYPE, runtime_spec)),
            snapshotter: self.ctx.snapshotter.clone(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        ContainersClient::new(self.ctx.channel.clone())
            .create(self.ctx.req(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(|s| grpc("create container", s))?;
        Ok(())
    }

    /// The container's task on the prepared root filesystem, its output going through
    /// `hangar log-driver` into the machine's log.
    async fn create_task(&self, id: &str, rootfs: Vec<Mount>) -> Result<(), DriverError> {
        let log_uri = format!(
            "binary://{}?log-driver={}",
            self.log_program.display(),
            self.log_file(id).display()
        );
        let created = self
            .tasks()
            .create(self.ctx.req(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs,
                stdout: log_uri.clone(),
                stderr: log_uri,
                ..Default::default()
            }))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(s) => Err(self.abandon(id, s).await),
        }
    }

    async fn start_task(&self, id: &str) -> Result<(), DriverError> {
        let started = self
            .tasks()
            .start(self.ctx.req(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await;
        match started {
            Ok(_) => Ok(()),
            Err(s) => Err(self.abandon(id, s).await),
        }
    }

    /// Removes a start that containerd refused, and says why it was refused.
    async fn abandon(&self, id: &str, s: tonic::Status) -> DriverError {
        self.remove_container(id).await;
        DriverError::InvalidConfig(format!("cannot start the machine: {}", s.message()))
    }
}

/// Writes what the platform puts in every machine's root filesystem: `/etc/hosts`,
/// `/etc/resolv.conf`, `/etc/hostname`, and the machine's `[[files]]`.
fn write_platform_files(root: &Path, spec: &LaunchSpec) -> Result<(), DriverError> {
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).map_err(|e| DriverError::io("create /etc", e))?;
    std::fs::write(etc.join("hosts"), spec::hosts_file(spec))
        .map_err(|e| DriverError::io("write /etc/hosts", e))?;
    std::fs::write(etc.join("resolv.conf"), spec::resolv_conf())
        .map_err(|e| DriverError::io("write /etc/resolv.conf", e))?;
    std::fs::write(etc.join("hostname"), format!("{}\n", spec.machine_id))
        .map_err(|e| DriverError::io("write /etc/hostname", e))?;
    crate::files::write(
        root,
        spec.config.files.as_deref().unwrap_or_default(),
        &spec.secrets,
    )
}

/// The host directory where writes to a rootfs snapshot land: overlay's upper dir, or
/// the bind-mounted directory.
fn writable_dir(mounts: &[Mount]) -> Option<PathBuf> {
    let m = mounts.first()?;
    match m.r#type.as_str() {
        "overlay" => m
            .options
            .iter()
            .find_map(|o| o.strip_prefix("upperdir="))
            .map(PathBuf::from),
        "bind" => Some(PathBuf::from(&m.source)),
        _ => None,
    }
}
