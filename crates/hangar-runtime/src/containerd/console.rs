//! Console sessions on containerd: the command is exec'd into the machine's task
//! (through the machine's init, for its secrets) with its stdio on named pipes the
//! shim opens, and a terminal from runc when one is asked for (containerd's
//! `ResizePty` sizes it). The pipes live in the machine's `exec/` directory and go
//! when the session is closed.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetRequest, KillRequest,
    ResizePtyRequest, StartRequest, WaitRequest,
};
use tokio::net::unix::pipe;

use super::image::grpc;
use super::{any, container_of, spec, ContainerdDriver, Ctx, PROCESS_TYPE};
use crate::console::{self, Console, ConsoleControl, ConsoleSpec};
use crate::{DriverError, LaunchSpec};

/// The session's exec in containerd, and the pipes it uses.
struct Session {
    ctx: Arc<Ctx>,
    container_id: String,
    exec_id: String,
    pipes: Vec<PathBuf>,
}

impl Session {
    fn tasks(&self) -> TasksClient<tonic::transport::Channel> {
        TasksClient::new(self.ctx.channel.clone())
    }
}

use containerd_client::tonic;

#[async_trait::async_trait]
impl ConsoleControl for Session {
    async fn resize(&self, rows: u16, cols: u16) -> Result<(), DriverError> {
        self.tasks()
            .resize_pty(self.ctx.req(ResizePtyRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                width: u32::from(cols),
                height: u32::from(rows),
            }))
            .await
            .map(|_| ())
            .map_err(|s| grpc("resize the console", s))
    }

    async fn wait(&self) -> Result<i32, DriverError> {
        let r = self
            .tasks()
            .wait(self.ctx.req(WaitRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
            }))
            .await
            .map_err(|s| grpc("wait for the console's command", s))?;
        Ok(r.into_inner().exit_status as i32)
    }

    async fn close_stdin(&self) {
        let closed = self
            .tasks()
            .close_io(self.ctx.req(CloseIoRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                stdin: true,
            }))
            .await;
        if let Err(s) = closed {
            tracing::debug!(error = %s.message(), "the console's input stays open");
        }
    }

    async fn close(&self) {
        let _ = self
            .tasks()
            .kill(self.ctx.req(KillRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                signal: 9,
                all: false,
            }))
            .await;
        let _ = self
            .tasks()
            .delete_process(self.ctx.req(DeleteProcessRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
            }))
            .await;
        for p in &self.pipes {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn mkfifo(path: &Path) -> Result<(), DriverError> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| DriverError::io(format!("make the pipe {}", path.display()), e.into()))
}

/// Opens the read end of a pipe the shim writes, in a thread: the open waits for the
/// shim's, so that the end of the shim's output is the end of the stream.
fn open_output(path: PathBuf) -> tokio::task::JoinHandle<std::io::Result<std::fs::File>> {
    tokio::task::spawn_blocking(move || std::fs::File::open(path))
}

/// Lets a pending [`open_output`] return when the shim never opened its end.
fn unblock(path: &Path) {
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path);
}

impl ContainerdDriver {
    /// The uid and gid `user` names inside the machine: a number, root, or a name of
    /// the machine's own `/etc/passwd` (read through its main process's root).
    async fn user_in(&self, id: &str, user: Option<&str>) -> Result<(u32, u32), DriverError> {
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return Ok((0, 0));
        };
        if let Some(ids) = console::numeric_user(user) {
            return Ok(ids);
        }
        let pid = self
            .tasks()
            .get(self.ctx.req(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| grpc("find the machine's task", s))?
            .into_inner()
            .process
            .map(|p| p.pid)
            .unwrap_or(0);
        let passwd =
            std::fs::read_to_string(format!("/proc/{pid}/root/etc/passwd")).unwrap_or_default();
        console::passwd_user(&passwd, user).ok_or_else(|| {
            DriverError::InvalidConfig(format!(
                "no user {user:?} in the machine's /etc/passwd: give root, a uid or a user the image has"
            ))
        })
    }

    pub(super) async fn console_in(
        &self,
        handle: &str,
        spec: &LaunchSpec,
        session: &ConsoleSpec,
    ) -> Result<Console, DriverError> {
        let id = container_of(handle)?;
        let (uid, gid) = self.user_in(&id, session.user.as_deref()).await?;
        let image = self.ctx.ensure_image(&spec.config.image).await?;
        let exec_id = format!("console-{:08x}", rand::random::<u32>());
        let dir = self.machine_dir(&id).join("exec");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| DriverError::io("create exec dir", e))?;
        let pipe_of = |name: &str| dir.join(format!("{exec_id}.{name}"));
        let (stdin_path, stdout_path, stderr_path) =
            (pipe_of("in"), pipe_of("out"), pipe_of("err"));
        let mut pipes = vec![stdin_path.clone(), stdout_path.clone()];
        if !session.tty {
            pipes.push(stderr_path.clone());
        }
        for p in &pipes {
            mkfifo(p)?;
        }
        let control = Session {
            ctx: self.ctx.clone(),
            container_id: id.clone(),
            exec_id: exec_id.clone(),
            pipes: pipes.clone(),
        };
        // Ours is opened for writing and reading, so it opens before the shim's.
        let stdin = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&stdin_path)
            .map_err(|e| DriverError::io("open the console's input", e))?;
        let stdout = open_output(stdout_path.clone());
        let stderr = (!session.tty).then(|| open_output(stderr_path.clone()));

        let mut full = session.command();
        full.insert(0, super::init::INIT_PATH.to_string());
        let mut process =
            spec::process(full, spec::env(spec, &image), &image.working_dir, uid, gid);
        let (rows, cols) = console::or_default_size(session.rows, session.cols);
        if session.tty {
            process["terminal"] = true.into();
            process["consoleSize"] = serde_json::json!({"height": rows, "width": cols});
        }
        let started = async {
            self.tasks()
                .exec(self.ctx.req(ExecProcessRequest {
                    container_id: id.clone(),
                    stdin: stdin_path.display().to_string(),
                    stdout: stdout_path.display().to_string(),
                    stderr: if session.tty {
                        String::new()
                    } else {
                        stderr_path.display().to_string()
                    },
                    terminal: session.tty,
                    spec: Some(any(PROCESS_TYPE, &process)),
                    exec_id: exec_id.clone(),
                }))
                .await
                .map_err(|s| grpc("start the console's command", s))?;
            self.tasks()
                .start(self.ctx.req(StartRequest {
                    container_id: id.clone(),
                    exec_id: exec_id.clone(),
                }))
                .await
                .map_err(|s| {
                    DriverError::InvalidConfig(format!(
                        "cannot run {:?}: {}",
                        session.command()[0],
                        s.message()
                    ))
                })?;
            Ok::<(), DriverError>(())
        };
        if let Err(e) = started.await {
            unblock(&stdout_path);
            unblock(&stderr_path);
            control.close().await;
            return Err(e);
        }
        if session.tty {
            let _ = control.resize(rows, cols).await;
        }
        let receiver = |f: std::io::Result<std::fs::File>| {
            f.and_then(pipe::Receiver::from_file)
                .map_err(|e| DriverError::io("open the console's output", e))
        };
        let stdout = receiver(stdout.await.map_err(|e| {
            DriverError::io("open the console's output", std::io::Error::other(e))
        })?)?;
        let stderr = match stderr {
            Some(open) => Some(receiver(open.await.map_err(|e| {
                DriverError::io("open the console's errors", std::io::Error::other(e))
            })?)?),
            None => None,
        };
        Ok(Console {
            stdin: Box::new(stdin),
            stdout: Box::new(stdout),
            stderr: stderr.map(|s| Box::new(s) as console::ConsoleReader),
            control: Box::new(control),
        })
    }
}
