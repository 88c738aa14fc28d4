//! `hangar ssh console` on both drivers: `-C` prints a command's output and returns
//! its status, piped input reaches a shell, and an interactive session driven through
//! a pseudo-terminal here has a terminal of its own there, follows a resize, and
//! passes Ctrl-C to the running command without ending the session. Each session is
//! an `ssh` event on the machine; a wrong app, a machine of another app and an app
//! with nothing started are clear errors.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::containerd::{run, setup_with};
use crate::harness::TestServer;

nix::ioctl_write_int_bad!(set_controlling_tty, nix::libc::TIOCSCTTY);

/// The CLI running on a pseudo-terminal this test holds the other side of.
struct OnTerminal {
    child: Child,
    master: std::fs::File,
    seen: Arc<Mutex<String>>,
}

impl OnTerminal {
    fn start(s: &TestServer, args: &[&str]) -> OnTerminal {
        let size = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("a pseudo-terminal");
        let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        let mut cmd = s.command(args);
        cmd.stdin(slave(&pty.slave))
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                set_controlling_tty(0, 0).map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd.spawn().expect("run hangar ssh console");
        drop(pty.slave);
        let master = std::fs::File::from(pty.master);
        let seen = Arc::new(Mutex::new(String::new()));
        let (mut reader, into) = (master.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    return;
                }
                into.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        OnTerminal {
            child,
            master,
            seen,
        }
    }

    fn type_in(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    /// Waits until the terminal has shown `text` (after what it showed before `from`).
    fn wait_for(&self, from: usize, text: &str, secs: u64) -> usize {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if let Some(at) = seen.get(from..).and_then(|s| s.find(text)) {
                return from + at + text.len();
            }
            assert!(
                Instant::now() < until,
                "the terminal never showed {text:?}; it showed:\n{seen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn resize(&self, rows: u16, cols: u16) {
        hangar_runtime::console::set_window_size(self.master.as_fd(), rows, cols).unwrap();
    }

    fn exit_code(mut self, secs: u64) -> i32 {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!(
                    "the session did not end; the terminal showed:\n{}",
                    self.seen.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `hangar ssh console` with `args`: its exit code, stdout and stderr.
fn console(s: &TestServer, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = s
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hangar ssh console");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An interactive session: its terminal, a resize, Ctrl-C, and its exit status.
fn interactive(s: &TestServer, args: &[&str], tty_cmd: &str, stty_cmd: &str) {
    let mut t = OnTerminal::start(s, args);
    t.type_in(&format!("{tty_cmd}; {stty_cmd}\r"));
    let at = t.wait_for(0, "/dev/pts/", 20);
    let at = t.wait_for(at, "24 80", 10);
    t.resize(40, 120);
    std::thread::sleep(Duration::from_millis(300));
    t.type_in(&format!("{stty_cmd}\r"));
    let at = t.wait_for(at, "40 120", 10);
    t.type_in("sleep 30\r");
    std::thread::sleep(Duration::from_millis(700));
    let interrupted = Instant::now();
    t.type_in("\x03");
    t.type_in("echo alive-$((40+2))\r");
    t.wait_for(at, "alive-42", 10);
    assert!(
        interrupted.elapsed() < Duration::from_secs(10),
        "Ctrl-C ended the sleep"
    );
    t.type_in("exit 3\r");
    assert_eq!(t.exit_code(10), 3, "the shell's exit status is the CLI's");
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_console_on_containerd() {
    let Some((_reg, s, image)) = setup_with("ssh-a", &[]).await else {
        return;
    };
    let config = json!({"image": image, "init": {"exec": ["/bin/sleep", "3600"]}});
    let id = run(&s, "ssh-a", config.clone()).await;
    s.wait_state("ssh-a", &id, "started").await;

    // One command: its output and its status.
    let (code, out, err) = console(
        &s,
        &[
            "ssh",
            "console",
            "-a",
            "ssh-a",
            "-C",
            "/bin/busybox df -h /",
        ],
        "",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Filesystem") && out.contains('/'), "{out}");
    let (code, out, err) = console(
        &s,
        &[
            "ssh",
            "console",
            "-a",
            "ssh-a",
            "-C",
            "sh -c 'echo out-$FLY_APP_NAME; echo to-err >&2; exit 7'",
        ],
        "",
    );
    assert_eq!(code, 7, "{out}{err}");
    assert_eq!(out, "out-ssh-a\n");
    assert_eq!(err, "to-err\n");

    // Piped input to a shell.
    let (code, out, _) = console(
        &s,
        &["ssh", "console", "-a", "ssh-a", "--machine", &id],
        "echo piped-$FLY_MACHINE_ID\nexit 4\n",
    );
    assert_eq!(code, 4);
    assert_eq!(out.trim(), format!("piped-{id}"));

    // A terminal, driven as a user would.
    interactive(
        &s,
        &["ssh", "console", "-a", "ssh-a"],
        "/bin/busybox tty",
        "/bin/busybox stty size",
    );
    let events = s.events("ssh-a", &id).await;
    let sessions = events.iter().filter(|e| e["type"] == "ssh").count();
    assert_eq!(sessions, 4, "every session is an event: {events:?}");

    // Files in and out, byte for byte; a failed copy leaves nothing here.
    let here = tempfile::tempdir().unwrap();
    let original: Vec<u8> = (0..300_000u32).map(|n| (n * 7 % 256) as u8).collect();
    let up = here.path().join("blob.bin");
    std::fs::write(&up, &original).unwrap();
    let up_s = up.to_str().unwrap();
    let (code, out, err) = console(
        &s,
        &[
            "ssh",
            "sftp",
            "put",
            up_s,
            "/tmp/blob copy.bin",
            "-a",
            "ssh-a",
        ],
        "",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("300000 bytes written to /tmp/blob copy.bin"),
        "{out}"
    );
    let down = here.path().join("back.bin");
    let down_s = down.to_str().unwrap();
    let (code, out, err) = console(
        &s,
        &[
            "ssh",
            "sftp",
            "get",
            "/tmp/blob copy.bin",
            down_s,
            "-a",
            "ssh-a",
        ],
        "",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        std::fs::read(&down).unwrap() == original,
        "the bytes came back unchanged"
    );
    let (code, _, err) = console(
        &s,
        &[
            "ssh",
            "sftp",
            "get",
            "/tmp/blob copy.bin",
            down_s,
            "-a",
            "ssh-a",
        ],
        "",
    );
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
    let missing = here.path().join("missing.bin");
    let (code, _, err) = console(
        &s,
        &[
            "ssh",
            "sftp",
            "get",
            "/nope/none",
            missing.to_str().unwrap(),
            "-a",
            "ssh-a",
        ],
        "",
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("cannot copy /nope/none out of machine"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(here.path()).unwrap().count(),
        2,
        "no partial file left"
    );

    // Bad input.
    let (code, _, err) = console(&s, &["ssh", "console", "-a", "ssh-nope", "-C", "true"], "");
    assert_ne!(code, 0);
    assert!(err.contains("app not found"), "{err}");
    s.create_app("ssh-b").await;
    let other = run(&s, "ssh-b", config).await;
    let (code, _, err) = console(
        &s,
        &[
            "ssh",
            "console",
            "-a",
            "ssh-a",
            "--machine",
            &other,
            "-C",
            "true",
        ],
        "",
    );
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("machine {other} is not a machine of ssh-a")),
        "{err}"
    );
    let r = s
        .call("POST", &format!("/apps/ssh-a/machines/{id}/stop"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state("ssh-a", &id, "stopped").await;
    let (code, _, err) = console(&s, &["ssh", "console", "-a", "ssh-a", "-C", "true"], "");
    assert_ne!(code, 0);
    assert!(err.contains("ssh-a has no started machine"), "{err}");
    let (code, _, err) = console(
        &s,
        &[
            "ssh",
            "console",
            "-a",
            "ssh-a",
            "--machine",
            &id,
            "-C",
            "true",
        ],
        "",
    );
    assert_ne!(code, 0);
    assert!(err.contains("is stopped: start it"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_console_on_the_process_driver() {
    let s = TestServer::start().await;
    s.create_app("ssh-p").await;
    let m = s.create_machine("ssh-p", "sleep 3600", json!({})).await;
    let id = m["id"].as_str().unwrap().to_string();
    s.wait_state("ssh-p", &id, "started").await;
    let (code, out, err) = console(
        &s,
        &[
            "ssh",
            "console",
            "-a",
            "ssh-p",
            "-C",
            "sh -c 'echo hi-$FLY_APP_NAME; exit 5'",
        ],
        "",
    );
    assert_eq!(code, 5, "{out}{err}");
    assert_eq!(out, "hi-ssh-p\n");
    interactive(&s, &["ssh", "console", "-a", "ssh-p"], "tty", "stty size");
}
