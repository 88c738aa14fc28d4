//! The agent in a process of its own (`hangar server --remote-agent` and `hangar agent
//! --control URL`): the control plane killed with SIGKILL while a machine serves
//! traffic costs no request, the agent still applies the restart policy, and when the
//! control plane is back its copy of the machine has every step once and no machine is
//! made twice.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::harness::{eventually, free_port, TestServer};

/// Requests through the proxy, one after another, until `stop`: how many were sent and
/// how many failed.
fn load(
    host: String,
    port: u16,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let sent = AtomicUsize::new(0);
        let mut failed = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            sent.fetch_add(1, Ordering::Relaxed);
            let r = http
                .get(format!("http://127.0.0.1:{port}/"))
                .header("host", &host)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 200 => {}
                Ok(r) => failed.push(format!("status {}", r.status())),
                Err(e) => failed.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (sent.into_inner(), failed)
    })
}

#[tokio::test]
async fn killing_the_control_plane_costs_no_request_and_nothing_is_lost() {
    let mut s = TestServer::start_apart(&["--driver", "process"]).await;
    s.create_app("steady").await;
    let port = free_port();
    let m = s
        .create_machine(
            "steady",
            &format!("mkdir -p www && echo up > www/index.html && exec busybox httpd -f -p 127.0.0.1:{port} -h www"),
            json!({"services": [{"protocol": "tcp", "internal_port": port,
                "ports": [{"port": 80, "handlers": ["http"]}]}],
                "restart": {"policy": "always"}}),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    s.wait_state("steady", &id, "started").await;
    let host = format!("steady.localhost:{}", s.http_port);
    eventually(10, "the agent's proxy serves the machine", || async {
        (s.proxy_get(&host, "/", &[]).await.0 == 200).then_some(())
    })
    .await;
    let pid = s.main_pid("steady", &id).await;

    // The control plane dies mid-traffic.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(host.clone(), s.http_port, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.kill9_control_plane();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = traffic.await.unwrap();
    assert!(sent > 50, "only {sent} requests went");
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {failed:?}",
        failed.len()
    );

    // The machine dies with nobody at the control plane: its agent restarts it.
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    eventually(15, "the restarted machine serves again", || async {
        let (status, body) = s.proxy_get(&host, "/", &[]).await;
        (status == 200 && body.trim() == "up").then_some(())
    })
    .await;

    // The control plane comes back, with traffic still flowing.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(host.clone(), s.http_port, stop.clone());
    s.spawn().await;
    let events = eventually(20, "the control plane has the restart", || async {
        let events = s.events("steady", &id).await;
        events
            .iter()
            .any(|e| e["type"] == "exit" && e["request"]["exit_event"]["restarting"] == true)
            .then_some(events)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = traffic.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {failed:?}",
        failed.len()
    );
    assert_eq!(events[0]["status"], "started", "{events:?}");
    let mut ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "no event twice: {events:?}");
    let listed = s.call("GET", "/apps/steady/machines", None).await;
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1), "{listed:?}");
    assert_eq!(listed.body[0]["state"], "started");
    assert_ne!(s.main_pid("steady", &id).await, pid, "a new run");

    // And it drives the machine as before.
    let r = s
        .call("POST", &format!("/apps/steady/machines/{id}/stop"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state("steady", &id, "stopped").await;
}
