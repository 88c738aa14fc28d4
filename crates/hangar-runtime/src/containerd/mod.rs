//! The containerd driver: each machine is an OCI container run by containerd (runc),
//! from an image pulled from any OCI registry.
//!
//! One container per machine, named by the machine ID, in the `hangar` namespace. A
//! start makes a fresh rootfs snapshot from the image (a stopped machine's rootfs is
//! reset, as on Fly), a container with the machine's runtime spec, and a task whose
//! output goes through `hangar log-driver` into the machine's log. Tasks outlive the
//! server (containerd's shims hold them) and are found again by the machine ID.

mod console;
pub mod daemon;
mod exec;
mod image;
mod init;
pub mod log_driver;
mod spec;
mod start;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::RemoveSnapshotRequest;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CreateRequest as CreateLeaseRequest, DeleteContainerRequest, DeleteTaskRequest, GetRequest,
    KillRequest, PauseTaskRequest, ResumeTaskRequest, WaitRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request};
use containerd_client::types::v1::Status;
use hangar_types::{ProcessStat, Signal};
use prost_types::Any;
use tokio::sync::{oneshot, Mutex};

pub use image::RegistryOptions;

use crate::{Adopted, Driver, DriverError, ExecOutput, ExitStatus, LaunchSpec, Running};
use image::grpc;

const NAMESPACE: &str = "hangar";
const LEASE: &str = "hangar-images";
const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// What every containerd call needs.
pub(crate) struct Ctx {
    channel: Channel,
    snapshotter: String,
    images_dir: PathBuf,
    registries: RegistryOptions,
    pull_lock: Mutex<()>,
}

impl Ctx {
    /// A request in Hangar's namespace, under its long-lived lease.
    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        let md = r.metadata_mut();
        md.insert(
            "containerd-namespace",
            NAMESPACE.parse().expect("static header value"),
        );
        md.insert(
            "containerd-lease",
            LEASE.parse().expect("static header value"),
        );
        r
    }
}

pub struct ContainerdDriver {
    ctx: Arc<Ctx>,
    /// One at a time per machine: a start, or the clean-up after its task exits.
    turns: Arc<std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>>,
    network: hangar_net::Network,
    /// Told of each machine attached to the network (see [`crate::AttachHook`]).
    pub(crate) attach_hook: std::sync::OnceLock<crate::AttachHook>,
    /// Per-machine files: logs and exec output.
    root: PathBuf,
    /// The `hangar` binary, run by the shim as the task's logging binary.
    log_program: PathBuf,
}

impl ContainerdDriver {
    /// Connects to containerd through `channel` and prepares Hangar's namespace lease.
    pub async fn new(
        channel: Channel,
        root: PathBuf,
        log_program: PathBuf,
        registries: RegistryOptions,
    ) -> Result<Self, DriverError> {
        let ctx = Ctx {
            channel,
            snapshotter: "overlayfs".into(),
            images_dir: root.join("images"),
            registries,
            pull_lock: Mutex::new(()),
        };
        let lease = CreateLeaseRequest {
            id: LEASE.into(),
            labels: Default::default(),
        };
        let mut r = Request::new(lease);
        r.metadata_mut().insert(
            "containerd-namespace",
            NAMESPACE.parse().expect("static header value"),
        );
        match LeasesClient::new(ctx.channel.clone()).create(r).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(grpc("create containerd lease", s)),
        }
        let network = hangar_net::Network::new(PathBuf::from(hangar_net::DEFAULT_STATE_DIR));
        Ok(Self {
            ctx: Arc::new(ctx),
            turns: Arc::default(),
            network,
            attach_hook: std::sync::OnceLock::new(),
            root,
            log_program,
        })
    }

    fn machine_dir(&self, id: &str) -> PathBuf {
        self.root.join("machines").join(id)
    }

    fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.ctx.channel.clone())
    }

    /// Removes the machine's task, container and rootfs snapshot, whatever is there.
    async fn remove_container(&self, id: &str) {
        remove_container(&self.ctx, id).await;
    }

    /// The machine's turn lock (see `turns`).
    fn turn(&self, id: &str) -> Arc<Mutex<()>> {
        turn_of(&self.turns, id)
    }

    /// Waits for the task's main process to exit, in the background. A lost connection
    /// to containerd is not an exit: the wait is retried until containerd is back (its
    /// shims keep the task meanwhile).
    fn watch_exit(&self, id: &str) -> oneshot::Receiver<ExitStatus> {
        let (tx, rx) = oneshot::channel();
        let cgroup = spec::cgroup_path(id);
        let (ctx, turn) = (self.ctx.clone(), self.turn(id));
        let (channel, id) = (self.ctx.channel.clone(), id.to_string());
        let machine = id.clone();
        let req = move || {
            let mut r = Request::new(WaitRequest {
                container_id: id.clone(),
                exec_id: String::new(),
            });
            r.metadata_mut().insert(
                "containerd-namespace",
                NAMESPACE.parse().expect("static header value"),
            );
            r
        };
        tokio::spawn(async move {
            let mut tasks = TasksClient::new(channel);
            let status = loop {
                match tasks.wait(req()).await {
                    Ok(r) => {
                        break exit_status(r.into_inner().exit_status, Some(oom_killed(&cgroup)))
                    }
                    Err(s) if s.code() == Code::NotFound => {
                        break ExitStatus {
                            exit_code: -1,
                            exited_at: now_ms(),
                            error: Some(format!("the machine's task is gone: {}", s.message())),
                            ..Default::default()
                        }
                    }
                    Err(s) => {
                        tracing::warn!(error = %s.message(), "lost containerd while waiting on a task; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            // The exited run's task, container and root filesystem go now, off the next
            // start's path (the next run gets a fresh root filesystem, as on Fly); the
            // exit is told only after, so nothing can start the machine in between.
            {
                let _turn = turn.lock().await;
                remove_container(&ctx, &machine).await;
            }
            let _ = tx.send(status);
        });
        rx
    }
}

/// Removes the machine's task, container and rootfs snapshot, whatever is there.
async fn remove_container(ctx: &Ctx, id: &str) {
    let _ = TasksClient::new(ctx.channel.clone())
        .kill(ctx.req(KillRequest {
            container_id: id.into(),
            exec_id: String::new(),
            signal: 9,
            all: true,
        }))
        .await;
    for _ in 0..50 {
        match TasksClient::new(ctx.channel.clone())
            .delete(ctx.req(DeleteTaskRequest {
                container_id: id.into(),
            }))
            .await
        {
            Err(s) if s.code() == Code::FailedPrecondition => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            _ => break,
        }
    }
    let _ = ContainersClient::new(ctx.channel.clone())
        .delete(ctx.req(DeleteContainerRequest { id: id.into() }))
        .await;
    let _ = SnapshotsClient::new(ctx.channel.clone())
        .remove(ctx.req(RemoveSnapshotRequest {
            snapshotter: ctx.snapshotter.clone(),
            key: id.into(),
        }))
        .await;
}

/// The lock taken by a machine's start and by the clean-up after its task exits.
fn turn_of(turns: &std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>, id: &str) -> Arc<Mutex<()>> {
    let mut map = turns.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(id.to_string()).or_default().clone()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Whether the kernel's OOM killer killed a process of the cgroup (`cgroup` as in the
/// runtime spec); read after the exit, before the task is deleted with its cgroup.
fn oom_killed(cgroup: &str) -> bool {
    let rel = cgroup.trim_start_matches('/');
    let files = [
        format!("/sys/fs/cgroup/memory/{rel}/memory.oom_control"),
        format!("/sys/fs/cgroup/{rel}/memory.events"),
    ];
    files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix("oom_kill "))
                .any(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
        })
    })
}

/// containerd reports a death by signal N as 128 + N.
fn exit_status(code: u32, oom: Option<bool>) -> ExitStatus {
    let signal = (code > 128 && code < 128 + 65).then(|| code as i32 - 128);
    ExitStatus {
        exit_code: code as i32,
        signal,
        oom_killed: oom.unwrap_or(false),
        exited_at: now_ms(),
        error: None,
    }
}

fn handle_of(id: &str) -> String {
    serde_json::json!({ "container": id }).to_string()
}

fn container_of(handle: &str) -> Result<String, DriverError> {
    serde_json::from_str::<serde_json::Value>(handle)
        .ok()
        .and_then(|v| v["container"].as_str().map(str::to_string))
        .ok_or_else(|| DriverError::BadHandle(handle.to_string()))
}

fn any(type_url: &str, v: &serde_json::Value) -> Any {
    Any {
        type_url: type_url.into(),
        value: v.to_string().into_bytes(),
    }
}

#[async_trait::async_trait]
impl Driver for ContainerdDriver {
    fn name(&self) -> &'static str {
        "containerd"
    }

    fn on_network_attach(&self, hook: crate::AttachHook) {
        let _ = self.attach_hook.set(hook);
    }

    /// The machine's private IPv4 address, reachable from the host through its bridge.
    fn address(&self, machine_id: &str) -> Option<std::net::IpAddr> {
        self.network.ipv4_of(machine_id)
    }

    fn log_file(&self, machine_id: &str) -> PathBuf {
        self.machine_dir(machine_id).join("machine.log")
    }

    fn check_config(&self, config: &hangar_types::MachineConfig) -> Result<(), String> {
        config
            .image
            .parse::<oci_client::Reference>()
            .map_err(|e| format!("invalid image reference {:?}: {e}", config.image))?;
        crate::files::check(config.files.as_deref().unwrap_or_default())
    }

    async fn prepare(&self, config: &hangar_types::MachineConfig) -> Result<(), DriverError> {
        self.ctx.ensure_image(&config.image).await.map(|_| ())
    }

    async fn start(&self, spec: &LaunchSpec) -> Result<Running, DriverError> {
        self.start_machine(spec).await
    }

    async fn adopt(&self, handle: &str) -> Result<Adopted, DriverError> {
        let id = container_of(handle)?;
        let got = self
            .tasks()
            .get(self.ctx.req(GetRequest {
                container_id: id.clone(),
                exec_id: String::new(),
            }))
            .await;
        let process = match got {
            Ok(r) => r.into_inner().process,
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => return Err(grpc("look up task", s)),
        };
        match process {
            Some(p) if p.status == Status::Running as i32 || p.status == Status::Paused as i32 => {
                Ok(Adopted::Running(self.watch_exit(&id)))
            }
            Some(p) => Ok(Adopted::Exited(exit_status(p.exit_status, None))),
            None => Ok(Adopted::Exited(ExitStatus {
                exit_code: -1,
                exited_at: now_ms(),
                error: Some("the machine's task is gone".into()),
                ..Default::default()
            })),
        }
    }

    async fn signal(&self, handle: &str, signal: Signal) -> Result<(), DriverError> {
        let id = container_of(handle)?;
        self.tasks()
            .kill(self.ctx.req(KillRequest {
                container_id: id,
                exec_id: String::new(),
                signal: signal.number() as u32,
                all: false,
            }))
            .await
            .map(|_| ())
            .or_else(|s| {
                if s.code() == Code::NotFound {
                    Ok(())
                } else {
                    Err(grpc("signal task", s))
                }
            })
    }

    async fn kill_all(&self, handle: &str) -> Result<(), DriverError> {
        let id = container_of(handle)?;
        let _ = self.resume(handle).await;
        self.tasks()
            .kill(self.ctx.req(KillRequest {
                container_id: id,
                exec_id: String::new(),
                signal: 9,
                all: true,
            }))
            .await
            .map(|_| ())
            .or_else(|s| {
                if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) {
                    Ok(())
                } else {
                    Err(grpc("kill task", s))
                }
            })
    }

    async fn suspend(&self, handle: &str) -> Result<(), DriverError> {
        let id = container_of(handle)?;
        self.tasks()
            .pause(self.ctx.req(PauseTaskRequest { container_id: id }))
            .await
            .map(|_| ())
            .map_err(|s| grpc("pause task", s))
    }

    async fn resume(&self, handle: &str) -> Result<(), DriverError> {
        let id = container_of(handle)?;
        match self
            .tasks()
            .resume(self.ctx.req(ResumeTaskRequest { container_id: id }))
            .await
        {
            Ok(_) => Ok(()),
            // Not paused: nothing to resume.
            Err(s)
                if matches!(
                    s.code(),
                    Code::FailedPrecondition | Code::NotFound | Code::Unknown
                ) =>
            {
                Ok(())
            }
            Err(s) => Err(grpc("resume task", s)),
        }
    }

    async fn exec(
        &self,
        handle: &str,
        spec: &LaunchSpec,
        argv: &[String],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Result<ExecOutput, DriverError> {
        self.exec_in(handle, spec, argv, stdin, timeout).await
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
        self.list_processes(handle).await
    }

    async fn destroy(&self, machine_id: &str) -> Result<(), DriverError> {
        self.remove_container(machine_id).await;
        self.network.detach(machine_id).await.map_err(|e| {
            DriverError::io(
                "take the machine off its network",
                std::io::Error::other(e.to_string()),
            )
        })?;
        let dir = self.machine_dir(machine_id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DriverError::io(format!("remove {}", dir.display()), e)),
        }
    }
}
