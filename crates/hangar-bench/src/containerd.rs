//! The containerd driver benchmark, in one run: create→started with a cached image
//! against `ctr run` of the same image, stopped→started, suspended→started,
//! stop→stopped for a process that exits on SIGINT, pulling a ~50 MB image against
//! `skopeo copy` of it, and the server's RSS per running machine.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hangar_testkit::{containerd_available, TestRegistry};
use serde_json::{json, Value};

use crate::common::{ms, ratio, rss_kib, BenchServer, Stats};

const ROUNDS: usize = 30;
const PADDING: usize = 50 << 20;

async fn create(s: &BenchServer, config: Value) -> Result<String> {
    let m: Value = s
        .client
        .call(
            reqwest::Method::POST,
            "/apps/bench/machines",
            Some(&json!({ "config": config })),
            &[],
        )
        .await?;
    m["id"].as_str().map(str::to_string).context("machine id")
}

async fn wait(s: &BenchServer, id: &str, state: &str) -> Result<()> {
    s.client.wait("bench", id, state, 60).await?;
    Ok(())
}

fn ctr(s: &BenchServer, args: &[&str]) -> Result<()> {
    let out = Command::new("ctr")
        .arg("-a")
        .arg(s.data_dir().join("containerd/containerd.sock"))
        .args(["-n", "bench"])
        .args(args)
        .output()
        .context("run ctr")?;
    if !out.status.success() {
        bail!(
            "ctr {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

pub async fn main() -> Result<()> {
    if let Err(why) = containerd_available() {
        bail!("the containerd benchmark needs {why} fixed");
    }
    let registry = TestRegistry::start();
    let image = registry.push_busybox("bench/busybox", "1").await;
    let s = BenchServer::start("containerd").await?;
    s.client.create_app("bench", "personal").await?;
    println!("hangar-bench containerd: loopback registry, {ROUNDS} rounds, 2 cores");

    let baseline = rss_kib(s.pid());
    let ids = create_latency(&s, &image).await?;
    let running = rss_kib(s.pid());
    let machines = ids.len() + 1;
    println!(
        "server RSS: {:.1} MiB with {machines} running machines, {:.1} MiB before them: {:.0} KiB per running machine",
        running as f64 / 1024.0,
        baseline as f64 / 1024.0,
        running.saturating_sub(baseline) as f64 / machines as f64
    );
    start_latency(&s, &ids).await?;
    polite_stop_latency(&s, &image).await?;
    pull_latency(&s, &registry).await
}

/// Warms the image cache, then create→started against `ctr run` of the same image;
/// returns the machines made after the warm one (all running).
async fn create_latency(s: &BenchServer, image: &str) -> Result<Vec<String>> {
    let warm = create(s, json!({"image": image})).await?;
    wait(s, &warm, "started").await?;
    let mut create_lat = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let id = create(s, json!({"image": image})).await?;
        wait(s, &id, "started").await?;
        create_lat.push(t.elapsed());
        ids.push(id);
    }
    let ctr_lat = ctr_run_latency(s, image)?;
    let (c, p) = (Stats::new(create_lat), Stats::new(ctr_lat));
    println!(
        "create→started (cached image): p50 {} p99 {} | ctr run -d p50 {} p99 {} | ratio p50 {}",
        ms(c.p50()),
        ms(c.p99()),
        ms(p.p50()),
        ms(p.p99()),
        ratio(c.p50(), p.p50())
    );
    Ok(ids)
}

/// The peer: ctr run of the same image, detached (returns once the task started).
fn ctr_run_latency(s: &BenchServer, image: &str) -> Result<Vec<Duration>> {
    ctr(s, &["images", "pull", "--plain-http", image])?;
    let mut ctr_lat = Vec::new();
    for i in 0..ROUNDS {
        let t = Instant::now();
        ctr(
            s,
            &["run", "-d", image, &format!("peer{i}"), "sleep", "3600"],
        )?;
        ctr_lat.push(t.elapsed());
    }
    Ok(ctr_lat)
}

/// stopped→started and suspended→started, over half the machines.
async fn start_latency(s: &BenchServer, ids: &[String]) -> Result<()> {
    let mut restart = Vec::new();
    let mut resume = Vec::new();
    for id in ids.iter().take(ROUNDS / 2) {
        s.client
            .action("bench", id, "stop", Some(&json!({"signal": "SIGKILL"})))
            .await?;
        wait(s, id, "stopped").await?;
        let t = Instant::now();
        s.client.action("bench", id, "start", None).await?;
        wait(s, id, "started").await?;
        restart.push(t.elapsed());
        s.client.action("bench", id, "suspend", None).await?;
        wait(s, id, "suspended").await?;
        let t = Instant::now();
        s.client.action("bench", id, "start", None).await?;
        wait(s, id, "started").await?;
        resume.push(t.elapsed());
    }
    let (r, u) = (Stats::new(restart), Stats::new(resume));
    println!("stopped→started: p50 {} p99 {}", ms(r.p50()), ms(r.p99()));
    println!("suspended→started: p50 {} p99 {}", ms(u.p50()), ms(u.p99()));
    Ok(())
}

/// stop→stopped for a process that exits on SIGINT.
async fn polite_stop_latency(s: &BenchServer, image: &str) -> Result<()> {
    let polite = json!({"image": image, "init": {"exec": ["/bin/sh", "-c",
        "trap 'exit 0' INT; while :; do sleep 3600 & wait $!; done"]}});
    let mut stop = Vec::new();
    for _ in 0..ROUNDS / 2 {
        let id = create(s, polite.clone()).await?;
        wait(s, &id, "started").await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        s.client.action("bench", &id, "stop", None).await?;
        wait(s, &id, "stopped").await?;
        stop.push(t.elapsed());
    }
    let st = Stats::new(stop);
    println!(
        "stop→stopped (exits on SIGINT): p50 {} p99 {}",
        ms(st.p50()),
        ms(st.p99())
    );
    Ok(())
}

/// Pulling a ~50 MB image, against skopeo copy of it.
async fn pull_latency(s: &BenchServer, registry: &TestRegistry) -> Result<()> {
    let big = registry.push_image("bench/big", "1", PADDING).await;
    let t = Instant::now();
    let id = create(s, json!({"image": big})).await?;
    let pull = t.elapsed();
    wait(s, &id, "started").await?;
    let dest = s.dir.path().join("skopeo");
    let t = Instant::now();
    let copied = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", &format!("docker://{big}")])
        .arg(format!("oci:{}:big", dest.display()))
        .output()
        .context("run skopeo (apt install skopeo)")?;
    let skopeo = t.elapsed();
    if !copied.status.success() {
        bail!("skopeo copy: {}", String::from_utf8_lossy(&copied.stderr));
    }
    println!(
        "pull ~50 MB image (fetch, store, unpack; create answered): {} | skopeo copy to an OCI dir: {} | ratio {}",
        ms(pull),
        ms(skopeo),
        ratio(pull, skopeo)
    );
    Ok(())
}
