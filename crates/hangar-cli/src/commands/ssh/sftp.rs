//! `hangar ssh sftp get|put`: files copied out of and into a started machine, as
//! `fly ssh sftp` copies them. Each copy is one console session without a terminal
//! running `cat` in the machine, so bytes pass unchanged in both directions; a copy
//! that fails leaves no partial file behind on this side.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use hangar_client::{Client, ConsoleRequest};
use hangar_types::console::{Frame, FrameReader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{machine_for, Target};
use crate::config;

#[derive(Subcommand)]
pub enum SftpCmd {
    /// Copy a file out of a machine
    Get {
        /// The file in the machine
        remote: String,
        /// Where to write it (default: its name, in the current directory)
        local: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Copy a file into a machine
    Put {
        /// The file here
        local: PathBuf,
        /// Where to write it in the machine
        remote: String,
        #[command(flatten)]
        target: Target,
    },
}

/// `s` quoted for the console's command line.
fn quoted(s: &str) -> Result<String> {
    shlex::try_quote(s)
        .map(|q| q.into_owned())
        .map_err(|_| anyhow::anyhow!("{s:?} cannot be passed to the machine (it holds a NUL byte)"))
}

/// Runs `command` in the machine with `input` as its stdin, its stdout written to
/// `out`; the exit status and what it wrote to stderr.
async fn piped(
    client: &Client,
    app: &str,
    machine: &str,
    command: String,
    input: Option<Vec<u8>>,
    out: &mut dyn Write,
) -> Result<(i32, String)> {
    let req = ConsoleRequest {
        command,
        ..Default::default()
    };
    let stream = client.open_console(app, machine, &req).await?;
    let (mut from, mut to) = tokio::io::split(stream);
    let send = async move {
        for chunk in input.unwrap_or_default().chunks(256 * 1024) {
            to.write_all(&Frame::Stdin(chunk.to_vec()).encode()).await?;
        }
        to.write_all(&Frame::StdinClosed.encode()).await?;
        // The stream stays open until the command's status comes back.
        Ok::<_, std::io::Error>(to)
    };
    let recv = async {
        let mut reader = FrameReader::default();
        let mut buf = vec![0u8; 256 * 1024];
        let mut err = Vec::new();
        loop {
            let n = from.read(&mut buf).await.context("read from the machine")?;
            if n == 0 {
                bail!("the connection to the machine was lost before the copy finished");
            }
            reader.push(&buf[..n]);
            while let Some(frame) = reader.next_frame() {
                match frame? {
                    Frame::Stdout(b) => out.write_all(&b)?,
                    Frame::Stderr(b) => err.extend_from_slice(&b),
                    Frame::Exit(code) => {
                        return Ok((code, String::from_utf8_lossy(&err).trim().to_string()))
                    }
                    Frame::Failed(why) => bail!("{why}"),
                    _ => {}
                }
            }
        }
    };
    let (sent, got) = tokio::join!(send, recv);
    let _kept_open = sent.context("send to the machine")?;
    got
}

/// The local file a get writes: the one given, or the remote file's name here.
fn local_path(remote: &str, local: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(l) = local {
        return Ok(l);
    }
    match Path::new(remote).file_name() {
        Some(name) => Ok(PathBuf::from(name)),
        None => bail!("{remote:?} names no file: give the file's path in the machine"),
    }
}

pub async fn run(cmd: SftpCmd) -> Result<()> {
    match cmd {
        SftpCmd::Get {
            remote,
            local,
            target,
        } => {
            let local = local_path(&remote, local)?;
            if local.exists() {
                bail!(
                    "{} already exists here: remove it or name another local path",
                    local.display()
                );
            }
            let app = target.app.name()?;
            let client = config::client()?;
            let machine = machine_for(&client, &app, &target).await?;
            let part = local.with_extension("hangar-part");
            let mut file = std::fs::File::create(&part)
                .with_context(|| format!("create {}", part.display()))?;
            let command = format!("cat -- {}", quoted(&remote)?);
            let result = piped(&client, &app, &machine.id, command, None, &mut file).await;
            let outcome = result.and_then(|(code, err)| {
                if code != 0 {
                    bail!("cannot copy {remote} out of machine {}: {err}", machine.id);
                }
                file.sync_all()?;
                std::fs::rename(&part, &local)
                    .with_context(|| format!("write {}", local.display()))?;
                Ok(())
            });
            if outcome.is_err() {
                let _ = std::fs::remove_file(&part);
            }
            outcome?;
            let size = std::fs::metadata(&local).map(|m| m.len()).unwrap_or(0);
            println!("{size} bytes written to {}", local.display());
            Ok(())
        }
        SftpCmd::Put {
            local,
            remote,
            target,
        } => {
            let bytes = std::fs::read(&local)
                .with_context(|| format!("read {} to copy it", local.display()))?;
            let app = target.app.name()?;
            let client = config::client()?;
            let machine = machine_for(&client, &app, &target).await?;
            let command = format!("sh -c {} sh {}", quoted("cat > \"$1\"")?, quoted(&remote)?);
            let size = bytes.len();
            let (code, err) = piped(
                &client,
                &app,
                &machine.id,
                command,
                Some(bytes),
                &mut std::io::sink(),
            )
            .await?;
            if code != 0 {
                bail!(
                    "cannot copy {} into machine {} as {remote}: {err}",
                    local.display(),
                    machine.id
                );
            }
            println!("{size} bytes written to {remote} in machine {}", machine.id);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_lands_under_the_remote_name_unless_told() {
        assert_eq!(
            local_path("/data/db.sqlite", None).unwrap(),
            PathBuf::from("db.sqlite")
        );
        assert_eq!(
            local_path("/data/db.sqlite", Some("x".into())).unwrap(),
            PathBuf::from("x")
        );
        assert!(local_path("/", None).is_err());
        assert_eq!(quoted("/data/a b").unwrap(), "'/data/a b'");
    }
}
