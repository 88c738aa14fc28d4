//! Billing from what ran: two machines of known sizes, one stopped half way, a
//! dedicated IPv4 address and bytes through the proxy give the seconds, bytes and cost
//! the price table says, through the API and `hangar billing`; the figures survive a
//! restart, and a machine that kept running while the server was down is billed for it.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{free_port, stdout, TestServer};

/// The first event's timestamp (ms) of `kind` reaching `status`.
async fn event_ms(s: &TestServer, app: &str, id: &str, kind: &str, status: &str) -> i64 {
    let events = s.events(app, id).await;
    events
        .iter()
        .rev()
        .find(|e| e["type"] == kind && e["status"] == status)
        .and_then(|e| e["timestamp"].as_i64())
        .unwrap_or_else(|| panic!("no {kind}/{status} event: {events:?}"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn line(report: &Value, pred: impl Fn(&Value) -> bool) -> &Value {
    report["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| pred(l))
        .unwrap_or_else(|| panic!("no such line in {report}"))
}

fn machine_line<'a>(report: &'a Value, size: &str) -> &'a Value {
    line(report, |l| {
        l["item"] == "machine" && l["size"] == size && l["state"] == "running"
    })
}

fn close(a: f64, b: f64, within: f64) -> bool {
    (a - b).abs() <= within
}

#[tokio::test]
async fn usage_is_metered_priced_and_kept_across_a_restart() {
    let mut s = TestServer::start().await;
    s.create_app("meter").await;
    let port = free_port();
    let page = "x".repeat(10_000);
    let small = s
        .create_machine(
            "meter",
            &format!(
                "mkdir -p www && printf '{page}' > www/index.html && exec busybox httpd -f -p 127.0.0.1:{port} -h www"
            ),
            json!({"guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
                "services": [{"protocol": "tcp", "internal_port": port}]}),
        )
        .await;
    let big = s
        .create_machine(
            "meter",
            "exec sleep 300",
            json!({"guest": {"cpu_kind": "performance", "cpus": 1, "memory_mb": 4096}}),
        )
        .await;
    let (small, big) = (
        small["id"].as_str().unwrap().to_string(),
        big["id"].as_str().unwrap().to_string(),
    );
    s.wait_state("meter", &small, "started").await;
    s.wait_state("meter", &big, "started").await;
    let ip = s
        .call(
            "POST",
            "/apps/meter/ip_assignments",
            Some(json!({"type": "v4"})),
        )
        .await;
    assert_eq!(ip.status, 200, "{ip:?}");
    let ip_at = now_ms();
    let (status, body) = s.proxy_get("meter.localhost", "/", &[]).await;
    assert_eq!((status, body.len()), (200, 10_000));

    tokio::time::sleep(Duration::from_secs(2)).await;
    s.call("POST", &format!("/apps/meter/machines/{big}/stop"), None)
        .await;
    s.wait_state("meter", &big, "stopped").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let small_from = event_ms(&s, "meter", &small, "start", "started").await;
    let big_from = event_ms(&s, "meter", &big, "start", "started").await;
    let big_to = event_ms(&s, "meter", &big, "stop", "stopping").await;
    let before = now_ms();
    let report = s
        .call("GET", "/orgs/personal/billing?app=meter", None)
        .await;
    let after = now_ms();
    assert_eq!(report.status, 200, "{report:?}");
    let r = &report.body;
    let month = r["month"].as_str().unwrap().to_string();

    // The small machine ran the whole time, the big one until it was stopped.
    let a = machine_line(r, "shared-cpu-1x");
    let a_secs = a["quantity"].as_f64().unwrap();
    assert!(
        a_secs >= (before - small_from) as f64 / 1000.0 - 0.3
            && a_secs <= (after - small_from) as f64 / 1000.0 + 0.3,
        "{a}"
    );
    assert_eq!(a["memory_mb"], 256);
    let b = machine_line(r, "performance-1x");
    let b_secs = b["quantity"].as_f64().unwrap();
    assert!(
        close(b_secs, (big_to - big_from) as f64 / 1000.0, 0.5),
        "{b}, expected {} s",
        (big_to - big_from) as f64 / 1000.0
    );
    assert!(
        b_secs < a_secs * 0.75,
        "stopped half way: {b_secs} of {a_secs}"
    );
    // Priced as the table says: a shared-cpu-1x at $1.94 per 30 days; a performance-1x
    // at $31 with 2 GB over its 2 GB at $5 per GB.
    let month_secs = 30.0 * 86_400.0;
    let a_price = a["unit_price"].as_f64().unwrap();
    assert!(close(a_price * month_secs, 1.94, 1e-9), "{a}");
    assert!(
        close(
            b["unit_price"].as_f64().unwrap() * month_secs,
            31.0 + 2.0 * 5.0,
            1e-9
        ),
        "{b}"
    );
    assert!(close(a["cost"].as_f64().unwrap(), a_secs * a_price, 1e-12));
    let ipv4 = line(r, |l| l["item"] == "ipv4");
    assert!(
        close(
            ipv4["quantity"].as_f64().unwrap(),
            (after - ip_at) as f64 / 1000.0,
            1.0
        ),
        "{ipv4}"
    );
    let egress = line(r, |l| l["item"] == "egress");
    assert!(egress["quantity"].as_f64().unwrap() >= 10_000.0, "{egress}");
    let total: f64 = r["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["cost"].as_f64().unwrap())
        .sum();
    assert!(close(r["total"].as_f64().unwrap(), total, 1e-12), "{r}");

    // The CLI shows the same lines.
    let out = s.cli(&["billing", "-a", "meter"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("machine shared-cpu-1x 256MB, running")
            && text.contains("machine performance-1x 4096MB, running")
            && text.contains("dedicated IPv4")
            && text.contains("TOTAL"),
        "{text}"
    );
    // Bad input is named.
    let bad = s
        .call("GET", "/orgs/personal/billing?month=2026-13", None)
        .await;
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.error().contains("YYYY-MM"), "{bad:?}");

    // A restart keeps the figures; the small machine ran on while the server was down.
    s.terminate();
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.spawn().await;
    let again = s
        .call(
            "GET",
            &format!("/orgs/personal/billing?app=meter&month={month}"),
            None,
        )
        .await;
    assert_eq!(again.status, 200, "{again:?}");
    let r2 = &again.body;
    let b2 = machine_line(r2, "performance-1x")["quantity"]
        .as_f64()
        .unwrap();
    assert!(
        close(b2, b_secs, 0.05),
        "the stopped machine's time: {b2} vs {b_secs}"
    );
    let a2 = machine_line(r2, "shared-cpu-1x")["quantity"]
        .as_f64()
        .unwrap();
    assert!(
        a2 >= a_secs + 1.0,
        "the running machine's time goes on, downtime included: {a2} vs {a_secs}"
    );
    assert!(
        line(r2, |l| l["item"] == "egress")["quantity"]
            .as_f64()
            .unwrap()
            >= 10_000.0
    );
}
