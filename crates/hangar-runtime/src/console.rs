//! Console sessions in a running machine (`hangar ssh console`): what a driver is
//! asked for ([`ConsoleSpec`]: the command, whether it gets a terminal and how big,
//! as which user) and what it hands back ([`Console`]: the command's input and
//! output as byte streams, and a [`ConsoleControl`] to resize its terminal, wait for
//! its exit status or end it). Terminal helpers shared by the drivers and the CLI
//! (window sizes on a terminal's descriptor) live here too. Framing the session for
//! the network is not a driver's business.

use std::os::fd::{AsRawFd, BorrowedFd};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::DriverError;

/// What to run in a console session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSpec {
    /// The command; empty means the machine's login shell.
    pub argv: Vec<String>,
    /// Whether the command gets a terminal (a PTY) rather than pipes.
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
    /// `root`, a user name of the machine's `/etc/passwd`, or `uid[:gid]`; `None` is root.
    pub user: Option<String>,
}

/// The shell a session without a command runs: bash where the image has it.
pub const LOGIN_SHELL: [&str; 3] = [
    "/bin/sh",
    "-c",
    "if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi",
];

impl ConsoleSpec {
    /// The command to run: the one given, or the login shell.
    pub fn command(&self) -> Vec<String> {
        if self.argv.is_empty() {
            LOGIN_SHELL.iter().map(|s| s.to_string()).collect()
        } else {
            self.argv.clone()
        }
    }
}

/// Byte streams of a session's command.
pub type ConsoleWriter = Box<dyn AsyncWrite + Send + Unpin>;
pub type ConsoleReader = Box<dyn AsyncRead + Send + Unpin>;

/// A command running in a machine for a console session.
pub struct Console {
    /// Its standard input (or terminal input); dropping it ends the input.
    pub stdin: ConsoleWriter,
    /// Its standard output, or everything its terminal shows.
    pub stdout: ConsoleReader,
    /// Its standard error; `None` with a terminal (which carries both).
    pub stderr: Option<ConsoleReader>,
    pub control: Box<dyn ConsoleControl>,
}

/// What can be done to a session's command besides talking to it.
#[async_trait::async_trait]
pub trait ConsoleControl: Send + Sync {
    /// Gives its terminal a new size (nothing without a terminal).
    async fn resize(&self, rows: u16, cols: u16) -> Result<(), DriverError>;
    /// Waits for it to end: its exit status, 128 + N for a signal N.
    async fn wait(&self) -> Result<i32, DriverError>;
    /// Ends its input, once [`Console::stdin`] has been dropped (where closing our end
    /// is not enough for the command to see the end).
    async fn close_stdin(&self) {}
    /// Ends it if it still runs, and frees what the driver kept for it.
    async fn close(&self);
}

nix::ioctl_write_ptr_bad!(set_winsize, nix::libc::TIOCSWINSZ, nix::pty::Winsize);
nix::ioctl_read_bad!(get_winsize, nix::libc::TIOCGWINSZ, nix::pty::Winsize);

fn winsize(rows: u16, cols: u16) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Gives the terminal on `fd` (a PTY's master, or a terminal) a new size.
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> std::io::Result<()> {
    let ws = winsize(rows, cols);
    // SAFETY: TIOCSWINSZ reads one Winsize from the pointer, which outlives the call.
    unsafe { set_winsize(fd.as_raw_fd(), &ws) }
        .map(|_| ())
        .map_err(std::io::Error::from)
}

/// The size of the terminal on `fd`, as (rows, columns); `None` when it is no terminal.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let mut ws = winsize(0, 0);
    // SAFETY: TIOCGWINSZ writes one Winsize through the pointer, which outlives the call.
    unsafe { get_winsize(fd.as_raw_fd(), &mut ws) }.ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// A terminal of a sensible size when the caller gave none.
pub fn or_default_size(rows: u16, cols: u16) -> (u16, u16) {
    (
        if rows == 0 { 24 } else { rows },
        if cols == 0 { 80 } else { cols },
    )
}

/// `uid[:gid]` as numbers, `root` as 0:0; `None` for a name to look up.
pub fn numeric_user(user: &str) -> Option<(u32, u32)> {
    if user == "root" {
        return Some((0, 0));
    }
    let (uid, gid) = match user.split_once(':') {
        Some((u, g)) => (u.parse().ok()?, g.parse().ok()?),
        None => {
            let uid = user.parse().ok()?;
            (uid, uid)
        }
    };
    Some((uid, gid))
}

/// The uid and gid of `user` in a `/etc/passwd` text.
pub fn passwd_user(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 4 && f[0] == user)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_numbers_root_or_passwd_names() {
        assert_eq!(numeric_user("root"), Some((0, 0)));
        assert_eq!(numeric_user("1000"), Some((1000, 1000)));
        assert_eq!(numeric_user("1000:50"), Some((1000, 50)));
        assert_eq!(numeric_user("postgres"), None);
        let passwd =
            "root:x:0:0:root:/root:/bin/sh\npostgres:x:999:998::/var/lib/postgresql:/bin/bash\n";
        assert_eq!(passwd_user(passwd, "postgres"), Some((999, 998)));
        assert_eq!(passwd_user(passwd, "nobody"), None);
    }

    #[test]
    fn a_session_without_a_command_gets_a_login_shell() {
        let spec = ConsoleSpec {
            argv: vec![],
            tty: true,
            rows: 0,
            cols: 0,
            user: None,
        };
        assert_eq!(spec.command()[0], "/bin/sh");
        assert_eq!(or_default_size(0, 0), (24, 80));
    }
}
