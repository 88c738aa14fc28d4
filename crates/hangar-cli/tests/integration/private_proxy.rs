//! `hangar proxy` on containerd: a local port forwarded through the API into an app's
//! private network reaches a TCP service in a machine (a busybox `nc` echo), carries
//! 50 connections at once byte for byte, picks one machine by id, and refuses what
//! cannot work — an unknown app, an app with no started machine, a local port already
//! taken — with a clear error and nothing left listening.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::containerd::{run, setup_with};
use crate::harness::{free_port, TestServer};

/// A running `hangar proxy`, killed when dropped.
struct Forward {
    child: Child,
    port: u16,
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `hangar proxy` with `args` and waits for its first line, which must say it
/// proxies `port`.
fn forward(s: &TestServer, port: u16, args: &[&str]) -> Forward {
    let mut child = s
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hangar proxy");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if !line.starts_with(&format!("Proxying local port {port} to remote [")) {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "hangar proxy {args:?} did not start: {line}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Forward { child, port }
}

/// Sends `payload` through the forward and returns what came back by the time the
/// far side closed (a reset ends it early: then the bytes are short).
async fn echo(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut r, mut w) = c.split();
    let send = async {
        if w.write_all(payload).await.is_ok() {
            let _ = w.shutdown().await;
        }
    };
    let mut back = Vec::new();
    let recv = r.read_to_end(&mut back);
    let _ = tokio::join!(send, recv);
    back
}

/// A failed `hangar proxy`: its stderr.
fn refused(s: &TestServer, args: &[&str]) -> String {
    let out = s.cli(args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn hangar_proxy_reaches_a_machines_private_service() {
    let Some((_reg, s, image)) = setup_with("px-db", &[]).await else {
        return;
    };
    let echo_config = json!({"image": image,
        "init": {"exec": ["/bin/nc", "-ll", "-p", "7000", "-e", "/bin/cat"]}});
    let first = run(&s, "px-db", echo_config.clone()).await;
    let second = run(&s, "px-db", echo_config).await;
    for id in [&first, &second] {
        s.wait_state("px-db", id, "started").await;
    }

    // 50 connections open at once through one forward, each its own bytes back. They
    // are opened one after another (busybox nc accepts slowly, with a short backlog),
    // each proven end to end, then all carry 64 KiB at the same time.
    let port = free_port();
    let mut fwd = forward(&s, port, &["proxy", &format!("{port}:7000"), "-a", "px-db"]);
    let mut open = Vec::new();
    for i in 0..50u32 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let hello = format!("hello {i}\n");
        c.write_all(hello.as_bytes()).await.unwrap();
        let mut back = vec![0u8; hello.len()];
        let echoed = tokio::time::timeout(Duration::from_secs(20), c.read_exact(&mut back)).await;
        if !matches!(echoed, Ok(Ok(_))) || back != hello.as_bytes() {
            let _ = fwd.child.kill();
            let mut err = String::new();
            std::io::Read::read_to_string(fwd.child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("connection {i} did not echo ({echoed:?}); the forward said:\n{err}");
        }
        open.push(c);
    }
    let clients: Vec<_> = open
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                let payload: Vec<u8> = (0..64 * 1024u32)
                    .map(|n| (n.wrapping_mul(31).wrapping_add(i as u32)) as u8)
                    .collect();
                let (mut r, mut w) = c.split();
                let send = async {
                    w.write_all(&payload).await.unwrap();
                    w.shutdown().await.unwrap();
                };
                let mut back = Vec::new();
                let (_, got) = tokio::join!(send, r.read_to_end(&mut back));
                got.unwrap();
                assert!(back == payload, "connection {i}: {} bytes back", back.len());
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    drop(fwd);

    // One machine by id, as <id>.vm.<app>.internal.
    let port = free_port();
    let fwd = forward(
        &s,
        port,
        &["proxy", &format!("{port}:7000"), &second, "-a", "px-db"],
    );
    assert_eq!(echo(fwd.port, b"to the second").await, b"to the second");
    drop(fwd);

    // A port nothing listens on: the forward starts, the connection is closed with
    // the reason on stderr.
    let port = free_port();
    let mut fwd = forward(&s, port, &["proxy", &format!("{port}:7001"), "-a", "px-db"]);
    assert!(echo(port, b"anyone?").await.is_empty());
    let _ = fwd.child.kill();
    let mut err = String::new();
    std::io::Read::read_to_string(fwd.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("cannot connect to px-db.internal:7001") && err.contains("refused"),
        "{err}"
    );

    // Bad input: each a clear error, nothing left listening.
    let port = free_port();
    let p = format!("{port}:7000");
    let e = refused(&s, &["proxy", &p, "-a", "px-nope"]);
    assert!(e.contains("app not found"), "{e}");
    let e = refused(&s, &["proxy", &p, "other-org-app.internal", "-a", "px-db"]);
    assert!(e.contains("no such private name"), "{e}");
    let e = refused(&s, &["proxy", &p, "fdaa:0:ff:a7b::2", "-a", "px-db"]);
    assert!(e.contains("not on this app's private network"), "{e}");
    let e = refused(&s, &["proxy", "99999", "-a", "px-db"]);
    assert!(e.contains("is not a port"), "{e}");
    assert!(
        port_is_free(port),
        "a refused forward leaves nothing listening"
    );
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let busy = taken.local_addr().unwrap().port();
    let e = refused(&s, &["proxy", &format!("{busy}:7000"), "-a", "px-db"]);
    assert!(
        e.contains(&format!("local port {busy} is already in use")),
        "{e}"
    );
    drop(taken);
    for id in [&first, &second] {
        let r = s
            .call("POST", &format!("/apps/px-db/machines/{id}/stop"), None)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        s.wait_state("px-db", id, "stopped").await;
    }
    let e = refused(&s, &["proxy", &p, "-a", "px-db"]);
    assert!(
        e.contains("px-db.internal has no started machine") && e.contains("hangar status"),
        "{e}"
    );
    assert!(port_is_free(port));
}
