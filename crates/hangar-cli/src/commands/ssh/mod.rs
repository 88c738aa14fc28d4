//! `hangar ssh console`: a shell (or one command, `-C`) in a started machine, as
//! `fly ssh console` gives one. With a terminal on both ends the session gets a PTY:
//! the local terminal goes raw, so keys such as Ctrl-C reach the machine's process,
//! and window size changes follow. Without one, input is piped and output comes back
//! on stdout and stderr. The command's exit status is the CLI's.
//!
//! The session is a stream of console frames through the API with the user's token
//! (`hangar_types::console`); this module only moves bytes between it and the local
//! terminal.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hangar_client::{Client, ConsoleRequest};
use hangar_types::console::{Frame, FrameReader};
use hangar_types::Machine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::AppArg;
use crate::config;

mod sftp;

#[derive(Subcommand)]
pub enum SshCmd {
    /// Open a shell in a machine, or run one command with -C
    Console(ConsoleArgs),
    /// Copy files out of and into a machine
    #[command(subcommand)]
    Sftp(sftp::SftpCmd),
}

/// Which machine of which app: `-a`, `--machine`, `-s`.
#[derive(Args, Clone)]
pub struct Target {
    #[command(flatten)]
    pub app: AppArg,
    /// Pick the machine from the app's started machines
    #[arg(short = 's', long = "select")]
    pub select: bool,
    /// The machine to connect to (default: a started machine of the app)
    #[arg(long = "machine")]
    pub machine: Option<String>,
}

#[derive(Args)]
pub struct ConsoleArgs {
    #[command(flatten)]
    pub target: Target,
    /// Command to run instead of a shell
    #[arg(short = 'C', long = "command")]
    pub command: Option<String>,
    /// The user to run as (root, a user of the image, or uid[:gid])
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Give the command a terminal even with -C or without a local terminal
    #[arg(long = "pty")]
    pub pty: bool,
}

pub async fn run(cmd: SshCmd) -> Result<ExitCode> {
    match cmd {
        SshCmd::Console(a) => console(a).await,
        SshCmd::Sftp(c) => sftp::run(c).await.map(|_| ExitCode::SUCCESS),
    }
}

/// The machine to open the session in.
async fn machine_for(client: &Client, app: &str, args: &Target) -> Result<Machine> {
    if let Some(id) = &args.machine {
        let m = client.get_machine(app, id).await.map_err(|e| match e.status() {
            Some(s) if s.as_u16() == 404 => anyhow::anyhow!(
                "machine {id} is not a machine of {app}: list them with `hangar machine list -a {app}`"
            ),
            _ => e.into(),
        })?;
        if m.state != "started" {
            bail!(
                "machine {id} is {}: start it with `hangar machine start {id} -a {app}`",
                m.state
            );
        }
        return Ok(m);
    }
    let started = super::started_machines(client, app).await?;
    if args.select && started.len() > 1 {
        return super::choose_machine(started, "pass --machine ID instead");
    }
    started
        .into_iter()
        .next()
        .with_context(|| format!("{app} has no started machine"))
}

/// The local terminal in raw mode for as long as this lives.
struct RawMode(nix::sys::termios::Termios);

impl RawMode {
    fn enter() -> Option<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
    }
}

/// The local terminal's size, when there is one.
fn local_size() -> Option<(u16, u16)> {
    use std::os::fd::AsFd;
    hangar_runtime::console::window_size(std::io::stdout().as_fd())
        .or_else(|| hangar_runtime::console::window_size(std::io::stdin().as_fd()))
}

/// Reads stdin on a thread of its own (a read of it cannot be cancelled); `None` at
/// its end.
fn stdin_chunks() -> mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(8);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match std::io::Read::read(&mut stdin, &mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

async fn console(args: ConsoleArgs) -> Result<ExitCode> {
    let app = args.target.app.name()?;
    let client = config::client()?;
    let machine = machine_for(&client, &app, &args.target).await?;
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let tty = args.pty || (args.command.is_none() && terminal);
    let (rows, cols) = if tty {
        local_size().unwrap_or((24, 80))
    } else {
        (0, 0)
    };
    let req = ConsoleRequest {
        command: args.command.clone().unwrap_or_default(),
        tty,
        rows,
        cols,
        user: args.user.clone(),
    };
    let stream = client.open_console(&app, &machine.id, &req).await?;
    let raw = (tty && std::io::stdin().is_terminal())
        .then(RawMode::enter)
        .flatten();
    let result = session(stream, tty).await;
    drop(raw);
    let code = result?;
    Ok(ExitCode::from((code & 0xff) as u8))
}

/// Moves bytes between the session and the local terminal until the command ends;
/// its exit status.
async fn session(stream: hangar_client::TunnelStream, tty: bool) -> Result<i32> {
    let (mut from_machine, mut to_machine) = tokio::io::split(stream);
    let mut input = stdin_chunks();
    let mut input_open = true;
    let mut resized = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("watch the terminal's size")?;
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            chunk = input.recv(), if input_open => {
                let frame = match chunk.flatten() {
                    Some(bytes) => Frame::Stdin(bytes),
                    None => {
                        input_open = false;
                        Frame::StdinClosed
                    }
                };
                to_machine.write_all(&frame.encode()).await.context("send to the machine")?;
            }
            _ = resized.recv(), if tty => {
                if let Some((rows, cols)) = local_size() {
                    to_machine
                        .write_all(&Frame::Resize { rows, cols }.encode())
                        .await
                        .context("send the terminal's size")?;
                }
            }
            n = from_machine.read(&mut buf) => {
                let n = n.context("read from the machine")?;
                if n == 0 {
                    bail!("the session ended without the command's exit status: the connection to the machine was lost");
                }
                reader.push(&buf[..n]);
                while let Some(frame) = reader.next_frame() {
                    match frame? {
                        Frame::Stdout(b) => {
                            let mut out = std::io::stdout().lock();
                            out.write_all(&b)?;
                            out.flush()?;
                        }
                        Frame::Stderr(b) => {
                            let mut err = std::io::stderr().lock();
                            err.write_all(&b)?;
                            err.flush()?;
                        }
                        Frame::Exit(code) => return Ok(code),
                        Frame::Failed(why) => bail!("{why}"),
                        _ => {}
                    }
                }
            }
        }
    }
}
