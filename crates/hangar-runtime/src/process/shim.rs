//! The shim: a small process (`hangar shim DIR`) that launches one machine's main
//! process and outlives the server, like containerd's shim or Nomad's executor.
//!
//! It puts the process in a process group of its own, sends its PID back to the server
//! as one line of JSON on stdout, writes the process's stdout and stderr to the
//! machine's log, waits for it, and writes how it ended to `exit.json`. So a server
//! that was killed and restarted still learns each exit code, and no output is lost
//! while it is down.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::logs::{self, LogWriter, MAX_LOG_FILE_BYTES};
use crate::ExitStatus;

/// How long the shim waits, after the process exits, for its last output.
const LOG_DRAIN: Duration = Duration::from_secs(2);

/// What the server asks the shim to run (`spec.json` in the run directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimSpec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    /// The machine's log file (see [`crate::logs`]).
    pub log: PathBuf,
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

/// Tells the server the machine's process could not be started; returns `code`, the
/// shim's exit code.
fn failed(error: String, code: i32) -> i32 {
    reply(&ShimReply::Failed { error });
    code
}

/// Runs the shim for the run directory `dir`; returns the shim's exit code.
pub fn run(dir: &Path) -> i32 {
    let spec: ShimSpec = match fs::read(dir.join(SPEC_FILE))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => return failed(format!("read launch spec in {}: {e}", dir.display()), 2),
    };
    let log = match LogWriter::open(spec.log.clone(), MAX_LOG_FILE_BYTES) {
        Ok(w) => Arc::new(w),
        Err(e) => return failed(format!("open machine log {}: {e}", spec.log.display()), 2),
    };
    let Some((program, args)) = spec.argv.split_first() else {
        return failed("no command to run".into(), 2);
    };
    let secret_env = match read_secret_env() {
        Ok(env) => env,
        // Never the values themselves: only why they could not be read.
        Err(e) => {
            return failed(
                format!("read the machine's secrets from the server: {e}"),
                2,
            )
        }
    };
    let spawned = Command::new(program)
        .args(args)
        .env_clear()
        .envs(&spec.env)
        .envs(&secret_env)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot run {program:?}: {e}"), 127),
    };
    let pid = child.id() as i32;
    let starttime = super::procfs::stat(pid).map(|s| s.starttime).unwrap_or(0);
    reply(&ShimReply::Started { pid, starttime });

    let (done, pumps) = pump_output(&mut child, &log);
    let waited = child.wait();
    // Let the output written just before the exit reach the log; a daemon the process
    // left behind may hold the pipes open, so do not wait for it forever.
    let deadline = Instant::now() + LOG_DRAIN;
    for _ in 0..pumps {
        if done
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_err()
        {
            break;
        }
    }
    match write_exit(dir, &exit_status(waited)) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// The environment from secrets, which the server sends through stdin, never through
/// the run directory. The error never holds the values.
fn read_secret_env() -> Result<BTreeMap<String, String>, String> {
    let mut secret_env = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut secret_env)
        .map_err(|e| e.to_string())
        .and_then(|_| {
            if secret_env.trim().is_empty() {
                Ok(BTreeMap::new())
            } else {
                serde_json::from_str(secret_env.trim())
                    .map_err(|e| format!("malformed at line {} column {}", e.line(), e.column()))
            }
        })
}

/// Copies the child's stdout and stderr into the machine's log, a thread for each;
/// returns where each thread says it is done, and how many there are.
fn pump_output(child: &mut Child, log: &Arc<LogWriter>) -> (mpsc::Receiver<()>, usize) {
    let (done_tx, done_rx) = mpsc::channel();
    let pipes: [(Option<Box<dyn std::io::Read + Send>>, &'static str); 2] = [
        (child.stdout.take().map(|p| Box::new(p) as _), "stdout"),
        (child.stderr.take().map(|p| Box::new(p) as _), "stderr"),
    ];
    let mut pumps = 0;
    for (pipe, stream) in pipes {
        if let Some(pipe) = pipe {
            let (log, done) = (log.clone(), done_tx.clone());
            pumps += 1;
            std::thread::spawn(move || {
                logs::pump(pipe, stream, &log);
                let _ = done.send(());
            });
        }
    }
    (done_rx, pumps)
}

/// How the machine's process ended, as `exit.json` records it.
fn exit_status(waited: std::io::Result<std::process::ExitStatus>) -> ExitStatus {
    match waited {
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
