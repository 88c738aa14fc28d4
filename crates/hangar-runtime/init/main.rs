//! `hangar-init`: the first program of every containerd machine, like Fly's init. It
//! reads the secrets the driver bind-mounted at `/.hangar/secrets` (NAME NUL VALUE NUL
//! ...) into the environment of the machine's command, so secret values never sit in
//! the container's spec on disk. As PID 1 it runs the command as its child, passes every
//! signal on to it (a command that installs no handler still stops on SIGTERM, which
//! the kernel would not deliver to a PID 1 without one), reaps orphans, and exits as the
//! command did. Anywhere else (a command exec'd into the machine) it becomes the
//! command.
//!
//! Built by `build.rs` as a static executable with std only: it must run in any image,
//! `FROM scratch` included. The few libc calls std does not wrap are declared here.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{exit, Command};

const SECRETS: &str = "/.hangar/secrets";

/// glibc's `sigset_t`: 1024 bits.
#[repr(C)]
struct SigSet([u64; 16]);

extern "C" {
    fn sigfillset(set: *mut SigSet) -> i32;
    fn sigprocmask(how: i32, set: *const SigSet, old: *mut SigSet) -> i32;
    fn sigwait(set: *const SigSet, sig: *mut i32) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
}

const SIG_BLOCK: i32 = 0;
const SIG_SETMASK: i32 = 2;
const SIGCHLD: i32 = 17;
const WNOHANG: i32 = 1;

fn command() -> Command {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("hangar-init: no command to run");
        exit(127);
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    match std::fs::read(SECRETS) {
        Ok(bytes) => {
            let mut fields = bytes.split(|b| *b == 0);
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                if name.is_empty() {
                    break;
                }
                cmd.env(
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            eprintln!("hangar-init: cannot read the machine's secrets: {e}");
            exit(126);
        }
    }
    cmd
}

fn fail(cmd: &Command, err: std::io::Error) -> ! {
    eprintln!(
        "hangar-init: cannot run {}: {err}",
        cmd.get_program().to_string_lossy()
    );
    exit(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

/// The exit code a shell would report for a wait status.
fn code_of(status: i32) -> i32 {
    let st = std::process::ExitStatus::from_raw(status);
    match (st.code(), st.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    }
}

fn main() {
    let pid1 = std::process::id() == 1;
    let mut all = SigSet([0; 16]);
    if pid1 {
        // First thing: a PID 1 drops signals it has no handler for, so a stop sent
        // while it starts up would be lost. Blocked, they wait for sigwait below.
        // SAFETY: `all` is a valid sigset_t-sized buffer; this process has one thread.
        unsafe {
            sigfillset(&mut all);
            sigprocmask(SIG_BLOCK, &all, std::ptr::null_mut());
        }
    }
    let mut cmd = command();
    if !pid1 {
        let err = cmd.exec();
        fail(&cmd, err);
    }
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // async-signal-safe sigprocmask on a valid, empty set.
    unsafe {
        cmd.pre_exec(|| {
            let none = SigSet([0; 16]);
            sigprocmask(SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c.id() as i32,
        Err(e) => fail(&cmd, e),
    };
    loop {
        let mut sig = 0;
        // SAFETY: both pointers are valid for the call.
        if unsafe { sigwait(&all, &mut sig) } != 0 {
            continue;
        }
        if sig != SIGCHLD {
            // SAFETY: kill has no memory effects.
            unsafe { kill(child, sig) };
            continue;
        }
        loop {
            let mut status = 0;
            // SAFETY: `status` is valid for the call.
            let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == child {
                exit(code_of(status));
            }
        }
    }
}
