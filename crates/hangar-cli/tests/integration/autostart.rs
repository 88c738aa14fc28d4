//! Scale to zero on real containerd: machines woken by requests are never stopped from
//! under them by autostop, even with a 2 s autostop interval and a health check on the
//! service; a burst past the hard limit queues instead of failing and starts each
//! machine at most once; a machine stopped by hand while a request waits on it hands
//! that request to another machine.

use std::time::Duration;

use serde_json::{json, Value};

use crate::containerd::{run, setup_with};
use crate::edge_traffic::starts;
use crate::harness::{eventually, TestServer};

/// A web machine: `/` answers `name`, `/cgi-bin/slow` after `slow_ms`, listening only
/// after `delay` seconds; its service stops when idle and has the given extra keys.
fn web(image: &str, name: &str, delay: u32, service: Value) -> Value {
    let slow = "#!/bin/sh\necho Content-Type: text/plain\necho\nusleep 500000\necho slow\n";
    let mut svc = json!({"protocol": "tcp", "internal_port": 8080, "autostop": "stop",
        "autostart": true, "min_machines_running": 0,
        "ports": [{"port": 80, "handlers": ["http"]}]});
    for (k, v) in service.as_object().into_iter().flatten() {
        svc[k] = v.clone();
    }
    json!({"image": image,
        "files": [
            {"guest_path": "/www/index.html", "raw_value": b64(&format!("{name}\n"))},
            {"guest_path": "/www/cgi-bin/slow", "raw_value": b64(slow), "mode": 0o755}],
        "init": {"exec": ["/bin/sh", "-c",
            format!("sleep {delay}; exec /bin/httpd -f -p 8080 -h /www")]},
        "services": [svc]})
}

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

async fn stop(s: &TestServer, app: &str, id: &str) {
    let r = s
        .call("POST", &format!("/apps/{app}/machines/{id}/stop"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state(app, id, "stopped").await;
}

/// A GET through the proxy, on its own task. Tests share one client: building one
/// costs enough CPU that a hundred built in a row would hold back the requests already
/// connected past the proxy's header deadline.
fn get(
    client: &reqwest::Client,
    port: u16,
    app: &str,
    path: &str,
) -> tokio::task::JoinHandle<Result<(u16, String), String>> {
    let (host, url) = (
        format!("{app}.localhost"),
        format!("http://127.0.0.1:{port}{path}"),
    );
    let client = client.clone();
    tokio::spawn(async move {
        let r = client
            .get(url)
            .header("host", host)
            .timeout(Duration::from_secs(40))
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = r.status().as_u16();
        Ok((status, r.text().await.unwrap_or_default()))
    })
}

#[tokio::test]
async fn cold_starts_with_a_check_survive_a_fast_autostop() {
    let Some((_reg, s, image)) = setup_with("cold", &["--autostop-interval", "2s"]).await else {
        return;
    };
    let check = json!({"checks": [{"type": "http", "path": "/", "grace_period": "1s",
        "interval": "1s", "timeout": "1s"}]});
    let id = run(&s, "cold", web(&image, "cold", 0, check)).await;
    s.wait_state("cold", &id, "started").await;
    let client = reqwest::Client::new();
    let mut failures = Vec::new();
    for round in 0..20 {
        // Autostop takes the idle machine down; the next request wakes it.
        eventually(30, "autostop to stop the idle machine", || async {
            (state(&s, "cold", &id).await == "stopped").then_some(())
        })
        .await;
        match get(&client, s.http_port, "cold", "/").await.unwrap() {
            Ok((200, body)) if body.trim() == "cold" => {}
            other => failures.push(format!("cold start {round}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}\n{}", s.log());
}

#[tokio::test]
async fn a_burst_past_the_hard_limit_queues_and_wakes_each_machine_once() {
    let Some((_reg, s, image)) = setup_with("queue", &[]).await else {
        return;
    };
    let limits = json!({"concurrency": {"type": "requests", "soft_limit": 20, "hard_limit": 25}});
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let id = run(&s, "queue", web(&image, name, 0, limits.clone())).await;
        s.wait_state("queue", &id, "started").await;
        stop(&s, "queue", &id).await;
        ids.push(id);
    }
    let mut before = Vec::new();
    for id in &ids {
        before.push(starts(&s, "queue", id).await);
    }
    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..100)
        .map(|_| get(&client, s.http_port, "queue", "/cgi-bin/slow"))
        .collect();
    let mut failed = Vec::new();
    for r in requests {
        match r.await.unwrap() {
            Ok((200, body)) if body.trim() == "slow" => {}
            other => failed.push(other),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 100 failed: {failed:?}\n{}",
        failed.len(),
        s.log()
    );
    for (id, was) in ids.iter().zip(before) {
        let now = starts(&s, "queue", id).await;
        assert!(now <= was + 1, "machine {id} started {} times", now - was);
    }
}

#[tokio::test]
async fn a_machine_stopped_while_a_request_waits_hands_it_on() {
    let Some((_reg, s, image)) = setup_with("handoff", &[]).await else {
        return;
    };
    // Each machine listens 2 s after it starts, so a request waits on it a while.
    let mut ids = Vec::new();
    for name in ["one", "two"] {
        let id = run(&s, "handoff", web(&image, name, 2, json!({}))).await;
        s.wait_state("handoff", &id, "started").await;
        stop(&s, "handoff", &id).await;
        ids.push(id);
    }
    let waiting = get(&reqwest::Client::new(), s.http_port, "handoff", "/");
    let woken = eventually(20, "a machine woken for the request", || async {
        for id in &ids {
            if matches!(
                state(&s, "handoff", id).await.as_str(),
                "starting" | "started"
            ) {
                return Some(id.clone());
            }
        }
        None
    })
    .await;
    stop(&s, "handoff", &woken).await;
    let (status, body) = waiting.await.unwrap().expect("an answer");
    let other = ids.iter().find(|id| **id != woken).unwrap();
    assert_eq!(status, 200, "{body}\n{}", s.log());
    assert_eq!(state(&s, "handoff", other).await, "started");
    assert_eq!(state(&s, "handoff", &woken).await, "stopped");
}
