//! Durability: a crashed server (kill -9) restarts, adopts the machines still running
//! (same PIDs, events intact) and records exits that happened while it was down.

use serde_json::json;

use crate::harness::{eventually, TestServer};

#[tokio::test]
async fn kill9_then_restart_adopts_running_machines() {
    let mut s = TestServer::start().await;
    s.create_app("crash").await;
    let mut machines = Vec::new();
    for _ in 0..5 {
        let m = s.create_machine("crash", "exec sleep 300", json!({})).await;
        machines.push(m["id"].as_str().unwrap().to_string());
    }
    let mut before = Vec::new();
    for id in &machines {
        s.wait_state("crash", id, "started").await;
        before.push((
            s.main_pid("crash", id).await,
            s.events("crash", id).await.len(),
        ));
    }

    s.kill9();
    // While the server is down, one machine's process dies.
    let victim = before[4].0;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill machine process");
    s.spawn().await;

    for (i, id) in machines.iter().take(4).enumerate() {
        let m = s.machine("crash", id).await;
        assert_eq!(m["state"], "started", "{id}");
        assert_eq!(
            s.main_pid("crash", id).await,
            before[i].0,
            "adopted, not restarted"
        );
        assert_eq!(
            s.events("crash", id).await.len(),
            before[i].1,
            "events intact and nothing new"
        );
    }
    // The victim: an exit recorded with its signal, then restarted (on-failure).
    let id = &machines[4];
    let exit = eventually(10, "exit event of the killed machine", || async {
        s.events("crash", id)
            .await
            .into_iter()
            .find(|e| e["type"] == "exit")
    })
    .await;
    assert_eq!(exit["request"]["exit_event"]["signal"], 9, "{exit}");
    assert_eq!(exit["request"]["exit_event"]["requested_stop"], false);
    assert_eq!(exit["request"]["exit_event"]["restarting"], true);
    s.wait_state("crash", id, "started").await;
    assert_ne!(s.main_pid("crash", id).await, victim);
}

#[tokio::test]
async fn sigterm_exits_cleanly_and_leaves_machines_running() {
    let mut s = TestServer::start().await;
    s.create_app("term").await;
    let m = s.create_machine("term", "exec sleep 300", json!({})).await;
    let id = m["id"].as_str().unwrap();
    s.wait_state("term", id, "started").await;
    let pid = s.main_pid("term", id).await;
    let status = s.terminate();
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "machine still running"
    );
    s.spawn().await;
    assert_eq!(s.main_pid("term", id).await, pid);
}
