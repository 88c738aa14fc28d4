//! Commands run inside a running container (`exec`, with output captured through
//! `file://` stdio), and the listing of its processes (`ps`).

use std::path::PathBuf;
use std::time::Duration;

use containerd_client::services::v1::{
    DeleteProcessRequest, ExecProcessRequest, GetRequest, KillRequest, ListPidsRequest,
    StartRequest, WaitRequest,
};
use containerd_client::tonic::{self, Code};
use hangar_types::ProcessStat;

use super::image::grpc;
use super::{any, container_of, spec, ContainerdDriver, PROCESS_TYPE};
use crate::process::procfs;
use crate::{DriverError, ExecOutput, LaunchSpec};

impl ContainerdDriver {
    pub(super) async fn exec_in(
        &self,
        handle: &str,
        spec: &LaunchSpec,
        argv: &[String],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Result<ExecOutput, DriverError> {
        let id = container_of(handle)?;
        if stdin.is_some() {
            return Err(DriverError::InvalidConfig(
                "stdin is not supported by exec on this driver".into(),
            ));
        }
        let image = self.ctx.ensure_image(&spec.config.image).await?;
        let exec_id = format!("exec-{:08x}", rand::random::<u32>());
        let dir = self.machine_dir(&id).join("exec");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| DriverError::io("create exec dir", e))?;
        let (out, err) = (
            dir.join(format!("{exec_id}.out")),
            dir.join(format!("{exec_id}.err")),
        );
        // Commands run through the machine's init, which gives them its secrets.
        let mut full = argv.to_vec();
        full.insert(0, super::init::INIT_PATH.to_string());
        let process = spec::process(full, spec::env(spec, &image), &image.working_dir, 0, 0);
        self.tasks()
            .exec(self.ctx.req(ExecProcessRequest {
                container_id: id.clone(),
                stdin: String::new(),
                stdout: format!("file://{}", out.display()),
                stderr: format!("file://{}", err.display()),
                terminal: false,
                spec: Some(any(PROCESS_TYPE, &process)),
                exec_id: exec_id.clone(),
            }))
            .await
            .map_err(|s| grpc("exec", s))?;
        let result = self.run_exec(&id, &exec_id, argv, timeout).await;
        let _ = self
            .tasks()
            .delete_process(self.ctx.req(DeleteProcessRequest {
                container_id: id,
                exec_id,
            }))
            .await;
        let (stdout, stderr) = (take_output(out).await, take_output(err).await);
        Ok(ExecOutput {
            exit_code: result?,
            stdout,
            stderr,
        })
    }

    /// Starts the exec'd process `exec_id` (running `argv`) and waits for its exit code;
    /// at `timeout` it is killed.
    async fn run_exec(
        &self,
        id: &str,
        exec_id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<i32, DriverError> {
        let mut tasks = self.tasks();
        let wait = tasks.wait(self.ctx.req(WaitRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        }));
        let started = self
            .tasks()
            .start(self.ctx.req(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await;
        match started {
            Err(s) => Err(DriverError::InvalidConfig(format!(
                "cannot run {:?}: {}",
                argv[0],
                s.message()
            ))),
            Ok(_) => match tokio::time::timeout(timeout, wait).await {
                Ok(Ok(r)) => Ok(r.into_inner().exit_status as i32),
                Ok(Err(s)) => Err(grpc("wait for exec", s)),
                Err(_) => {
                    let _ = self
                        .tasks()
                        .kill(self.ctx.req(KillRequest {
                            container_id: id.to_string(),
                            exec_id: exec_id.to_string(),
                            signal: 9,
                            all: false,
                        }))
                        .await;
                    Err(DriverError::Timeout(timeout))
                }
            },
        }
    }

    pub(super) async fn list_processes(
        &self,
        handle: &str,
    ) -> Result<Vec<ProcessStat>, DriverError> {
        let id = container_of(handle)?;
        let not_running = |s: tonic::Status| {
            if s.code() == Code::NotFound {
                DriverError::NotRunning
            } else {
                grpc("list processes", s)
            }
        };
        let main_pid = self
            .tasks()
            .get(self.ctx.req(GetRequest {
                container_id: id.clone(),
                exec_id: String::new(),
            }))
            .await
            .map_err(not_running)?
            .into_inner()
            .process
            .map(|p| p.pid as i32)
            .unwrap_or(0);
        let pids = self
            .tasks()
            .list_pids(self.ctx.req(ListPidsRequest { container_id: id }))
            .await
            .map_err(not_running)?
            .into_inner()
            .processes;
        let mut out: Vec<ProcessStat> = pids
            .iter()
            .filter_map(|p| procfs::process(p.pid as i32))
            .collect();
        // The machine's init is the platform's, not the app's: the main process is the
        // command it runs (the lowest PID left), as on Fly.
        out.retain(|p| !p.command.starts_with(super::init::INIT_PATH));
        let main_pid = out
            .iter()
            .map(|p| p.pid)
            .filter(|p| *p > main_pid)
            .min()
            .unwrap_or(main_pid);
        // The main process first, then the rest by PID.
        out.sort_by_key(|p| (p.pid != main_pid, p.pid));
        Ok(out)
    }
}

/// An exec's captured output (empty when there is none), its file removed.
async fn take_output(path: PathBuf) -> String {
    let s = tokio::fs::read(&path)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let _ = tokio::fs::remove_file(&path).await;
    s
}
