//! Machine logs: captured with timestamps, kept across server restarts (even the lines
//! written while it was down), filtered by machine, followed, and printed by `hangar logs`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{eventually, stdout, TestServer};

fn entries(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn logs_are_kept_filtered_and_followed() {
    let mut s = TestServer::start().await;
    s.create_app("logs").await;
    let talker = s
        .create_machine(
            "logs",
            "i=0; while :; do i=$((i+1)); echo out $i; echo err $i >&2; sleep 0.1; done",
            json!({}),
        )
        .await;
    let quiet = s
        .create_machine("logs", "echo hello from quiet; exec sleep 300", json!({}))
        .await;
    let (t, q) = (
        talker["id"].as_str().unwrap(),
        quiet["id"].as_str().unwrap(),
    );
    s.wait_state("logs", t, "started").await;

    let o = s.cli(&["logs", "-a", "logs", "--no-tail", "--json"]);
    let lines = eventually(10, "lines from both machines", || async {
        let o = s.cli(&["logs", "-a", "logs", "--no-tail", "--json"]);
        let e = entries(&stdout(&o));
        (e.iter().any(|l| l["machine"] == q) && e.iter().any(|l| l["stream"] == "stderr"))
            .then_some(e)
    })
    .await;
    assert!(o.status.success());
    let first = lines.iter().find(|l| l["machine"] == t).unwrap();
    for key in ["timestamp", "app", "machine", "region", "stream", "message"] {
        assert!(first.get(key).is_some(), "{key} missing in {first}");
    }
    assert_eq!(
        (first["app"].as_str(), first["region"].as_str()),
        (Some("logs"), Some("ord"))
    );
    assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
    let stamps: Vec<&str> = lines
        .iter()
        .map(|l| l["timestamp"].as_str().unwrap())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "oldest first");

    let only_quiet = s.cli(&["logs", "-a", "logs", "--machine", q, "--no-tail"]);
    let text = stdout(&only_quiet);
    assert!(
        text.contains(&format!("app[{q}] ord [info] hello from quiet")),
        "{text}"
    );
    assert!(!text.contains(t), "{text}");
    let r = s
        .call("GET", "/apps/logs/logs?machine_id=00000000000000", None)
        .await;
    assert_eq!(r.status, 404);

    // Lines written while the server is down are there after it restarts.
    let last_before = |e: &[Value]| e.iter().filter(|l| l["machine"] == t).count();
    let before = last_before(&entries(&stdout(&s.cli(&[
        "logs",
        "-a",
        "logs",
        "--no-tail",
        "--json",
    ]))));
    s.kill9();
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.spawn().await;
    let after = entries(&stdout(&s.cli(&[
        "logs",
        "-a",
        "logs",
        "--no-tail",
        "--json",
    ])));
    assert!(
        last_before(&after) >= before + 8,
        "output went on while the server was down"
    );

    // Following: new lines arrive on the open stream.
    let mut res = reqwest::Client::new()
        .get(format!(
            "{}/v1/apps/logs/logs?follow=true&limit=1&machine_id={t}",
            s.url()
        ))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.lines().count() < 6 && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(2), res.chunk()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    let followed = entries(&seen);
    assert!(followed.len() >= 6, "followed lines: {seen}");
    assert!(followed.iter().all(|l| l["machine"] == t));
}
