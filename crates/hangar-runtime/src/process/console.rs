//! Console sessions on the process driver: the command runs on the host beside the
//! machine's processes, in the machine's directory with its environment, on a fresh
//! PTY (its own session, the PTY its controlling terminal) or on pipes. It runs as the
//! server's user; another user only when the server is root.

use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::Mutex;

use super::{parse_handle, procfs, ProcessDriver};
use crate::console::{self, Console, ConsoleControl, ConsoleSpec};
use crate::{DriverError, LaunchSpec};

nix::ioctl_write_int_bad!(set_controlling_tty, nix::libc::TIOCSCTTY);

struct Session {
    child: Mutex<tokio::process::Child>,
    pid: i32,
    /// The PTY's master, for resizing; `None` on pipes.
    master: Option<Arc<OwnedFd>>,
}

#[async_trait::async_trait]
impl ConsoleControl for Session {
    async fn resize(&self, rows: u16, cols: u16) -> Result<(), DriverError> {
        match &self.master {
            Some(m) => console::set_window_size(m.as_fd(), rows, cols)
                .map_err(|e| DriverError::io("resize the console", e)),
            None => Ok(()),
        }
    }

    async fn wait(&self) -> Result<i32, DriverError> {
        use std::os::unix::process::ExitStatusExt;
        let status = self
            .child
            .lock()
            .await
            .wait()
            .await
            .map_err(|e| DriverError::io("wait for the console's command", e))?;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }

    async fn close(&self) {
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
    }
}

/// Reads a PTY's master, taking the end of the terminal (EIO once every holder of
/// the other side is gone) as the end of the stream.
struct Master(tokio::fs::File);

impl tokio::io::AsyncRead for Master {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => {
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// The uid and gid to run as: the server's own unless root asks for another.
fn user_of(user: Option<&str>) -> Result<Option<(u32, u32)>, DriverError> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let ids = match console::numeric_user(user) {
        Some(ids) => ids,
        None => match nix::unistd::User::from_name(user) {
            Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
            _ => {
                return Err(DriverError::InvalidConfig(format!(
                    "no user {user:?} on this host: the process driver runs commands as host users"
                )))
            }
        },
    };
    let me = nix::unistd::geteuid().as_raw();
    if ids.0 == me {
        return Ok(None);
    }
    if me != 0 {
        return Err(DriverError::InvalidConfig(format!(
            "the process driver runs commands as the server's user (uid {me}); it cannot become {user:?}"
        )));
    }
    Ok(Some(ids))
}

impl ProcessDriver {
    pub(super) async fn console_in(
        &self,
        handle: &str,
        spec: &LaunchSpec,
        session: &ConsoleSpec,
    ) -> Result<Console, DriverError> {
        let h = parse_handle(handle)?;
        if !procfs::is_alive(h.pid, h.starttime) {
            return Err(DriverError::NotRunning);
        }
        let ids = user_of(session.user.as_deref())?;
        let argv = session.command();
        let mut cmd = self.command_in(spec, &argv)?;
        cmd.kill_on_drop(true);
        if let Some((uid, gid)) = ids {
            cmd.uid(uid).gid(gid);
        }
        let cannot_run = |e: std::io::Error| {
            DriverError::InvalidConfig(format!("cannot run {:?}: {e}", argv[0]))
        };
        if !session.tty {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            let mut child = cmd.spawn().map_err(cannot_run)?;
            let (stdin, stdout, stderr) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take());
            let (Some(stdin), Some(stdout), Some(stderr)) = (stdin, stdout, stderr) else {
                return Err(DriverError::io(
                    "open the console's pipes",
                    std::io::Error::other("missing"),
                ));
            };
            let pid = child.id().unwrap_or(0) as i32;
            return Ok(Console {
                stdin: Box::new(stdin),
                stdout: Box::new(stdout),
                stderr: Some(Box::new(stderr)),
                control: Box::new(Session {
                    child: Mutex::new(child),
                    pid,
                    master: None,
                }),
            });
        }
        let (rows, cols) = console::or_default_size(session.rows, session.cols);
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None)
            .map_err(|e| DriverError::io("open a terminal", e.into()))?;
        let slave = |fd: &OwnedFd| {
            fd.try_clone()
                .map(Stdio::from)
                .map_err(|e| DriverError::io("open a terminal", e))
        };
        cmd.stdin(slave(&pty.slave)?)
            .stdout(slave(&pty.slave)?)
            .stderr(slave(&pty.slave)?);
        // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                set_controlling_tty(0, 0).map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(cannot_run)?;
        drop(cmd);
        drop(pty.slave);
        let pid = child.id().unwrap_or(0) as i32;
        let master = Arc::new(pty.master);
        let file = |fd: &OwnedFd| {
            fd.try_clone()
                .map(|fd| tokio::fs::File::from_std(std::fs::File::from(fd)))
                .map_err(|e| DriverError::io("open a terminal", e))
        };
        Ok(Console {
            stdin: Box::new(file(&master)?),
            stdout: Box::new(Master(file(&master)?)),
            stderr: None,
            control: Box::new(Session {
                child: Mutex::new(child),
                pid,
                master: Some(master),
            }),
        })
    }
}
