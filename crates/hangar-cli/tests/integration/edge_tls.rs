//! The edge beyond plain HTTP: HTTPS routed by SNI with the development CA's
//! certificates (verified by curl), HTTP/2 through ALPN, `force_https`, WebSockets
//! through the proxy, services on an app's own address (HTTP, raw TCP, TLS, PROXY
//! protocol), and the addresses and certificate every app is given exactly once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{eventually, first_v4, free_port, stdout, TestServer};

/// A machine serving `body` at `/` with busybox httpd, and the given service ports.
async fn site(s: &TestServer, app: &str, body: &str, ports: Value) -> String {
    let port = free_port();
    let script = format!(
        "mkdir -p www && echo {body} > www/index.html && exec busybox httpd -f -p 127.0.0.1:{port} -h www"
    );
    let m = s
        .create_machine(
            app,
            &script,
            json!({"services": [{"protocol": "tcp", "internal_port": port, "ports": ports}]}),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    s.wait_state(app, &id, "started").await;
    id
}

/// Runs curl; returns its exit code and standard output.
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn dev_ca(s: &TestServer) -> std::path::PathBuf {
    let out = s.cli(&["certs", "ca"]);
    assert!(out.status.success(), "{out:?}");
    let pem = stdout(&out);
    assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");
    let path = s.dir.path().join("dev-ca.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

#[tokio::test]
async fn https_by_sni_http2_and_force_https() {
    let s = TestServer::start().await;
    s.create_app("secure").await;
    s.create_app("plain").await;
    site(
        &s,
        "secure",
        "secure-site",
        json!([{"port": 80, "handlers": ["http"], "force_https": true},
               {"port": 443, "handlers": ["tls", "http"]}]),
    )
    .await;
    site(
        &s,
        "plain",
        "plain-site",
        json!([{"port": 80, "handlers": ["http"]}]),
    )
    .await;

    // Plain HTTP to an app that forces HTTPS is redirected, path and query kept.
    let (code, out) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        &format!("Host: secure.localhost:{}", s.http_port),
        &format!("http://127.0.0.1:{}/a/b?c=1", s.http_port),
    ]);
    assert_eq!(
        (code, out),
        (
            0,
            format!("301 https://secure.localhost:{}/a/b?c=1", s.https_port)
        )
    );
    let (_, out) = curl(&[
        "-H",
        &format!("Host: plain.localhost:{}", s.http_port),
        &format!("http://127.0.0.1:{}/", s.http_port),
    ]);
    assert_eq!(out.trim(), "plain-site", "no redirect without force_https");

    // HTTPS, verified against the development CA, chosen by SNI, HTTP/2 by ALPN.
    let ca = dev_ca(&s);
    let ca = ca.to_str().unwrap();
    for (app, body) in [("secure", "secure-site"), ("plain", "plain-site")] {
        let host = format!("{app}.localhost:{}", s.https_port);
        let resolve = format!("{host}:127.0.0.1");
        let (code, out) = curl(&[
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            "-w",
            "%{http_version}",
            &format!("https://{host}/"),
        ]);
        assert_eq!(code, 0, "curl verifies {host}: {out}");
        assert_eq!(out, format!("{body}\n2"), "HTTP/2 to {app}");
        let (code, out) = curl(&[
            "--http1.1",
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            "-w",
            "%{http_version}",
            &format!("https://{host}/"),
        ]);
        assert_eq!((code, out), (0, format!("{body}\n1.1")));
    }
    // A certificate the user brings is served for its hostname.
    let own = hangar_certs::ca::DevCa::load_or_create(&s.dir.path().join("own-ca")).unwrap();
    let issued = own.issue("import.example.test").unwrap();
    let (chain, key, root) = (
        s.dir.path().join("chain.pem"),
        s.dir.path().join("key.pem"),
        s.dir.path().join("own-root.pem"),
    );
    std::fs::write(&chain, &issued.chain_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    std::fs::write(&root, own.cert_pem()).unwrap();
    let import = |host: &str| {
        s.cli(&[
            "certs",
            "import",
            host,
            "-a",
            "secure",
            "--fullchain",
            chain.to_str().unwrap(),
            "--private-key",
            key.to_str().unwrap(),
        ])
    };
    let wrong = import("other.example.test");
    assert!(!wrong.status.success());
    assert!(
        crate::harness::stderr(&wrong).contains("does not name other.example.test"),
        "{wrong:?}"
    );
    let out = import("import.example.test");
    assert!(out.status.success(), "{out:?}");
    let host = format!("import.example.test:{}", s.https_port);
    let (code, body) = curl(&[
        "--cacert",
        root.to_str().unwrap(),
        "--resolve",
        &format!("{host}:127.0.0.1"),
        &format!("https://{host}/"),
    ]);
    assert_eq!((code, body.trim()), (0, "secure-site"));
    let list = stdout(&s.cli(&["certs", "list", "-a", "secure"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("import.example.test") && l.contains("Verified")),
        "{list}"
    );

    // A name nobody holds a certificate for gets no handshake.
    let host = format!("nosuch.localhost:{}", s.https_port);
    let (code, _) = curl(&[
        "--cacert",
        ca,
        "--resolve",
        &format!("{host}:127.0.0.1"),
        &format!("https://{host}/"),
    ]);
    assert_ne!(code, 0, "unknown SNI must fail the handshake");
}

/// The RFC 6455 handshake answered by a shell script, then bytes echoed with `cat`.
const WS_SCRIPT: &str = r#"#!/bin/sh
key=""
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
  case "$line" in [Ss]ec-[Ww]eb[Ss]ocket-[Kk]ey:*) key=$(printf '%s' "${line#*:}" | tr -d ' ');; esac
done
accept=$(printf '%s' "${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11" | busybox sha1sum | cut -c1-40 | busybox xxd -r -p | busybox base64)
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n' "$accept"
exec cat
"#;

fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("read head");
        assert_eq!(
            n,
            1,
            "connection closed mid-head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn websockets_pass_through() {
    let s = TestServer::start().await;
    s.create_app("chat").await;
    let script_path = s.dir.path().join("ws.sh");
    std::fs::write(&script_path, WS_SCRIPT).unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&script_path)
        .status()
        .unwrap();
    let port = free_port();
    let m = s
        .create_machine(
            "chat",
            // It listens a moment after it has started: the upgrade must wait for it.
            &format!(
                "sleep 0.5; exec busybox nc -ll -p {port} -e {}",
                script_path.display()
            ),
            json!({"services": [{"protocol": "tcp", "internal_port": port,
                "ports": [{"port": 80, "handlers": ["http"]}]}]}),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    s.wait_state("chat", &id, "started").await;

    let http_port = s.http_port;
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", http_port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
            .write_all(
                b"GET /chat HTTP/1.1\r\nHost: chat.localhost\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                  Sec-WebSocket-Version: 13\r\n\r\n",
            )
            .unwrap();
        let head = read_head(&mut stream);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        // Frames flow both ways, several times, on the upgraded connection.
        for text in ["hello", "second message"] {
            let mask = [1u8, 2, 3, 4];
            let mut frame = vec![0x81, 0x80 | text.len() as u8];
            frame.extend_from_slice(&mask);
            frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            stream.write_all(&frame).unwrap();
            let mut echoed = vec![0u8; frame.len()];
            stream.read_exact(&mut echoed).unwrap();
            assert_eq!(echoed, frame);
        }
    })
    .await
    .unwrap();
}

/// Sends `send` and reads until the answer ends with `until` (or 20 s pass).
fn exchange(addr: &str, send: &[u8], until: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(send).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(until.as_bytes()) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn services_listen_on_the_apps_own_address() {
    let s = TestServer::start().await;
    s.create_app("tcp").await;
    let out = s.cli(&["ips", "allocate-v4", "-a", "tcp", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let ip: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let addr = first_v4(s.http_port);
    assert_eq!(ip["ip"], addr.as_str());
    assert_eq!(ip["shared"], false);

    let echo = free_port();
    let (pp, raw, tls) = (free_port(), free_port(), free_port());
    let m = s
        .create_machine(
            "tcp",
            &format!("exec busybox nc -ll -p {echo} -e cat"),
            json!({"services": [{"protocol": "tcp", "internal_port": echo, "ports": [
                {"port": pp, "handlers": ["proxy_proto"]},
                {"port": raw, "handlers": []},
                {"port": tls, "handlers": ["tls"]}]}]}),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    s.wait_state("tcp", &id, "started").await;
    let web = free_port();
    site(
        &s,
        "tcp",
        "by-address",
        json!([{"port": web, "handlers": ["http"]}]),
    )
    .await;

    let raw_addr = format!("{addr}:{raw}");
    let got = eventually(20, "the raw TCP listener", || {
        let a = raw_addr.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                TcpStream::connect(&a)
                    .ok()
                    .map(|_| exchange(&a, b"ping\n", "ping\n"))
            })
            .await
            .unwrap()
            .filter(|g| g == "ping\n")
        }
    })
    .await;
    assert_eq!(got, "ping\n");

    // As root, the app's IPv6 address (from a pool routed to this host) listens too.
    if nix::unistd::geteuid().is_root() {
        let out = s.cli(&["ips", "list", "-a", "tcp", "--json"]);
        let ips: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
        let v6 = ips
            .iter()
            .find(|i| i["type"] == "v6")
            .expect("a v6 address");
        let v6_addr = format!("[{}]:{raw}", v6["ip"].as_str().unwrap());
        let got = tokio::task::spawn_blocking(move || exchange(&v6_addr, b"six\n", "six\n"))
            .await
            .unwrap();
        assert_eq!(got, "six\n");
    }

    let pp_addr = format!("{addr}:{pp}");
    let got = tokio::task::spawn_blocking(move || exchange(&pp_addr, b"ping\n", "ping\n"))
        .await
        .unwrap();
    let (header, rest) = got.split_once("\r\n").expect("a PROXY line");
    assert!(
        header.starts_with("PROXY TCP4 127.") && header.ends_with(&format!(" {pp}")),
        "{header}"
    );
    assert!(header.contains(&format!(" {addr} ")), "{header}");
    assert_eq!(rest, "ping\n");

    // TLS terminated by the proxy with the app's certificate, bytes passed on.
    let ca = dev_ca(&s);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(printf 'over tls\\n'; sleep 3) | timeout 20 openssl s_client -quiet -no_ign_eof -connect {addr}:{tls} \
             -servername tcp.localhost -verify_return_error -CAfile {} 2>/dev/null",
            ca.display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls\n");

    // HTTP on the app's address needs no Host header to find the app.
    let (code, body) = curl(&[&format!("http://{addr}:{web}/")]);
    assert_eq!((code, body.trim()), (0, "by-address"));
}

#[tokio::test]
async fn every_app_gets_its_addresses_and_certificate_once() {
    let s = TestServer::start().await;
    let created = s.cli(&["apps", "create", "prov"]);
    assert!(created.status.success(), "{created:?}");
    let ips = |s: &TestServer| -> Vec<Value> {
        let out = s.cli(&["ips", "list", "-a", "prov", "--json"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let first = ips(&s);
    let kinds: Vec<&str> = first.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["shared_v4", "v6"], "{first:?}");
    assert_eq!(
        first[0]["ip"], "127.0.0.1",
        "the edge listener's address is shared"
    );
    let certs = stdout(&s.cli(&["certs", "list", "-a", "prov"]));
    assert!(
        certs.contains("prov.localhost") && certs.contains("Issued"),
        "{certs}"
    );

    // Creating it again is refused, and provisions nothing twice.
    let again = s.cli(&["apps", "create", "prov"]);
    assert!(!again.status.success());
    assert_eq!(ips(&s), first);
    let list = s.call("GET", "/apps/prov/certificates", None).await;
    assert_eq!(list.body["total_count"], 1, "{list:?}");

    // Bad input: unknown type, unknown address, invalid hostname.
    let r = s
        .call(
            "POST",
            "/apps/prov/ip_assignments",
            Some(json!({"type": "v5"})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.body["error"].as_str().unwrap().contains("v4, shared_v4"),
        "{r:?}"
    );
    let r = s
        .call("DELETE", "/apps/prov/ip_assignments/10.9.9.9", None)
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .call(
            "POST",
            "/apps/prov/certificates/acme",
            Some(json!({"hostname": "no spaces.com"})),
        )
        .await;
    assert_eq!(r.status, 422, "{r:?}");

    // Destroying the app releases its addresses: the next app gets the same IPv6.
    let out = s.cli(&["apps", "destroy", "prov", "--yes"]);
    assert!(out.status.success(), "{out:?}");
    s.create_app("prov").await;
    assert_eq!(ips(&s)[1]["ip"], first[1]["ip"]);
}
