//! The shim: a small process (`hangar shim DIR`) that launches one machine's main
//! process and outlives the server, like containerd's shim or Nomad's executor.
//!
//! It puts the process in a process group of its own, sends its PID back to the server
//! as one line of JSON on stdout, waits for it, and writes how it ended to `exit.json`.
//! So a server that was killed and restarted still learns each exit code.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::ExitStatus;

/// What the server asks the shim to run (`spec.json` in the run directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimSpec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// The shim's one line of reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ShimReply {
    Started { pid: i32, starttime: u64 },
    Failed { error: String },
}

pub const SPEC_FILE: &str = "spec.json";
pub const EXIT_FILE: &str = "exit.json";

fn reply(r: &ShimReply) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
    let _ = out.flush();
}

/// Runs the shim for the run directory `dir`; returns the shim's exit code.
pub fn run(dir: &Path) -> i32 {
    let spec: ShimSpec = match fs::read(dir.join(SPEC_FILE))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            reply(&ShimReply::Failed {
                error: format!("read launch spec in {}: {e}", dir.display()),
            });
            return 2;
        }
    };
    let open_log = |p: &Path| OpenOptions::new().create(true).append(true).open(p);
    let (stdout, stderr) = match (open_log(&spec.stdout), open_log(&spec.stderr)) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            reply(&ShimReply::Failed {
                error: format!("open machine log files: {e}"),
            });
            return 2;
        }
    };
    let Some((program, args)) = spec.argv.split_first() else {
        reply(&ShimReply::Failed {
            error: "no command to run".into(),
        });
        return 2;
    };
    let spawned = Command::new(program)
        .args(args)
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            reply(&ShimReply::Failed {
                error: format!("cannot run {program:?}: {e}"),
            });
            return 127;
        }
    };
    let pid = child.id() as i32;
    let starttime = super::procfs::stat(pid).map(|s| s.starttime).unwrap_or(0);
    reply(&ShimReply::Started { pid, starttime });

    let status = match child.wait() {
        Ok(s) => ExitStatus {
            exit_code: s.code().unwrap_or(128 + s.signal().unwrap_or(0)),
            signal: s.signal(),
            oom_killed: false,
            exited_at: now_ms(),
            error: None,
        },
        Err(e) => ExitStatus {
            exit_code: -1,
            exited_at: now_ms(),
            error: Some(format!("wait for machine process: {e}")),
            ..Default::default()
        },
    };
    match write_exit(dir, &status) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn write_exit(dir: &Path, status: &ExitStatus) -> std::io::Result<()> {
    let tmp = dir.join("exit.json.tmp");
    fs::write(&tmp, serde_json::to_vec(status).unwrap_or_default())?;
    fs::rename(tmp, dir.join(EXIT_FILE))
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
