//! Flycast on containerd: an app's private address (`hangar ips allocate-v6
//! --private`) is `<app>.flycast` in private DNS, and connections to it from a machine
//! of the same org go through the proxy with the app's services — so a stopped machine
//! wakes when another app calls it, while raw `.internal` traffic goes machine to
//! machine and wakes nothing. `hangar proxy` reaches it from the host too.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::json;

use crate::containerd::{run, setup_with, sh};
use crate::harness::{free_port, TestServer};

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn state(s: &TestServer, app: &str, id: &str) -> String {
    s.machine(app, id).await["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn flycast_reaches_an_app_through_the_proxy_and_wakes_it() {
    let Some((_reg, s, image)) = setup_with("fc-a", &[]).await else {
        return;
    };
    s.create_app("fc-b").await;
    let web = json!({"image": image,
        "files": [{"guest_path": "/www/index.html", "raw_value": b64("hello b\n")}],
        "init": {"exec": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]},
        "services": [{"protocol": "tcp", "internal_port": 8080, "autostop": "stop",
            "autostart": true, "min_machines_running": 0,
            "ports": [{"port": 80, "handlers": ["http"]}]}]});
    let b = run(&s, "fc-b", web).await;
    let a = run(
        &s,
        "fc-a",
        json!({"image": image, "init": {"exec": ["/bin/sleep", "3600"]}}),
    )
    .await;
    s.wait_state("fc-b", &b, "started").await;
    s.wait_state("fc-a", &a, "started").await;

    let out = s.cli(&["ips", "allocate-v6", "--private", "-a", "fc-b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.cli(&["ips", "list", "-a", "fc-b", "--json"]);
    let ips: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let flycast = ips
        .iter()
        .filter_map(|i| i["ip"].as_str())
        .find(|ip| ip.starts_with("fdaa:0:1:0:1:"))
        .unwrap_or_else(|| panic!("a Flycast address: {ips:?}"))
        .to_string();

    // The name, from inside a machine of the org.
    let looked = crate::harness::eventually(5, "fc-b.flycast resolves", || {
        let (s, a, flycast) = (&s, &a, &flycast);
        async move {
            let out = sh(s, "fc-a", a, "nslookup -type=aaaa fc-b.flycast").await;
            out.contains(flycast.as_str()).then_some(out)
        }
    })
    .await;
    assert!(looked.contains(&flycast), "{looked}");

    let get = format!(
        "printf 'GET / HTTP/1.0\\r\\nHost: fc-b.flycast\\r\\n\\r\\n' | nc -w 10 {flycast} 80"
    );
    let body = sh(&s, "fc-a", &a, &get).await;
    assert!(
        body.contains("200") && body.ends_with("hello b\n"),
        "{body}"
    );

    // Stopped, .internal traffic does not wake it; Flycast does.
    let r = s
        .call("POST", &format!("/apps/fc-b/machines/{b}/stop"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state("fc-b", &b, "stopped").await;
    let b_ip = s.machine("fc-b", &b).await["private_ip"]
        .as_str()
        .unwrap()
        .to_string();
    let raw = sh(
        &s,
        "fc-a",
        &a,
        &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {b_ip} 8080; echo rc=$?"),
    )
    .await;
    assert!(!raw.contains("hello b"), "{raw}");
    assert_eq!(
        state(&s, "fc-b", &b).await,
        "stopped",
        "raw 6PN traffic wakes nothing"
    );
    let body = sh(&s, "fc-a", &a, &get).await;
    assert!(
        body.ends_with("hello b\n"),
        "a Flycast request wakes the app: {body}"
    );
    assert_eq!(state(&s, "fc-b", &b).await, "started");

    // From the host, through the API, to the Flycast name.
    let port = free_port();
    let mut child = s
        .command(&["proxy", &format!("{port}:80"), "fc-b.flycast", "-a", "fc-a"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("[fc-b.flycast]:80"), "{line}");
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/"))
        .header("host", "fc-b.flycast")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello b\n");
    let _ = child.kill();
    let _ = child.wait();
}
