//! The process driver benchmark: create→started over 200 machines against a direct
//! fork/exec, stop latency, create throughput up to 1000 machines, listing 1000
//! machines against `GET /healthz`, and server RSS with 1000 stopped machines.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hangar_client::Client;
use hangar_types::requests::CreateMachineRequest;
use hangar_types::{Machine, MachineConfig};
use serde_json::Value;

use crate::common::{ms, ratio, rss_kib, BenchServer, Stats};

const LATENCY_MACHINES: usize = 200;
const TOTAL_MACHINES: usize = 1000;
const IN_FLIGHT: usize = 16;
const LIST_ROUNDS: usize = 50;

fn machine_request() -> CreateMachineRequest {
    let config: MachineConfig = serde_json::from_value(serde_json::json!({
        "image": "bench", "init": {"exec": ["/bin/sleep", "3600"]}, "restart": {"policy": "no"}
    }))
    .expect("static config");
    CreateMachineRequest {
        config: Some(config),
        ..Default::default()
    }
}

async fn create_started(client: &Client, app: &str) -> Result<(String, Duration)> {
    let t = Instant::now();
    let m = client.create_machine(app, &machine_request()).await?;
    client.wait(app, &m.id, "started", 30).await?;
    Ok((m.id, t.elapsed()))
}

/// Spawning the command directly and seeing it run: the floor any supervisor pays.
fn direct_spawn_latencies(n: usize) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut child = Command::new("/bin/sleep")
            .arg("3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("spawn /bin/sleep")?;
        let pid = child.id();
        while !std::path::Path::new(&format!("/proc/{pid}/stat")).exists() {
            std::thread::yield_now();
        }
        out.push(t.elapsed());
        child.kill()?;
        child.wait()?;
    }
    Ok(out)
}

pub async fn main() -> Result<()> {
    let server = BenchServer::start("process").await?;
    run(&server.url, &server.token, &server.client, server.pid()).await
}

async fn run(url: &str, token: &str, client: &Client, server_pid: u32) -> Result<()> {
    let client = client.clone();
    client.create_app("bench", "personal").await?;
    println!(
        "hangar-bench: process driver, loopback, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let ids = create_latency(&client).await?;
    stop_latency(&client, &ids).await?;
    let client = Arc::new(client);
    let more = create_throughput(&client).await?;
    stop_in_flight(&client, &more).await?;
    list_latency(&client, url, token).await?;
    println!(
        "server RSS with {TOTAL_MACHINES} stopped machines: {:.1} MiB",
        rss_kib(server_pid) as f64 / 1024.0
    );
    Ok(())
}

/// create→started, one machine at a time, against a direct fork/exec; returns the
/// machines made.
async fn create_latency(client: &Client) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut lat = Vec::new();
    for _ in 0..LATENCY_MACHINES {
        let (id, d) = create_started(client, "bench").await?;
        ids.push(id);
        lat.push(d);
    }
    let create = Stats::new(lat);
    let direct = Stats::new(direct_spawn_latencies(LATENCY_MACHINES)?);
    println!(
        "create→started ({LATENCY_MACHINES} machines): p50 {} p99 {} | direct fork/exec p50 {} p99 {} | ratio p50 {}",
        ms(create.p50()),
        ms(create.p99()),
        ms(direct.p50()),
        ms(direct.p99()),
        ratio(create.p50(), direct.p50())
    );
    Ok(ids)
}

/// stop → stopped, one machine at a time.
async fn stop_latency(client: &Client, ids: &[String]) -> Result<()> {
    let mut lat = Vec::new();
    for id in ids {
        let t = Instant::now();
        client.action("bench", id, "stop", None).await?;
        client.wait("bench", id, "stopped", 30).await?;
        lat.push(t.elapsed());
    }
    let stop = Stats::new(lat);
    println!(
        "stop→stopped ({LATENCY_MACHINES} machines): p50 {} p99 {}",
        ms(stop.p50()),
        ms(stop.p99())
    );
    Ok(())
}

/// Throughput: the rest of the 1000 machines created and started, IN_FLIGHT at a time;
/// returns the machines made.
async fn create_throughput(client: &Arc<Client>) -> Result<Vec<String>> {
    let rest = TOTAL_MACHINES - LATENCY_MACHINES;
    let t = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::new();
    for _ in 0..rest {
        let permit = sem.clone().acquire_owned().await?;
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let r = create_started(&c, "bench").await;
            drop(permit);
            r
        }));
    }
    let mut more = Vec::new();
    for task in tasks {
        more.push(task.await??.0);
    }
    let secs = t.elapsed().as_secs_f64();
    println!("create throughput: {rest} machines created and started in {secs:.2} s = {:.0} machines/s ({IN_FLIGHT} in flight)", rest as f64 / secs);
    Ok(more)
}

/// Stops the machines, IN_FLIGHT at a time.
async fn stop_in_flight(client: &Arc<Client>, ids: &[String]) -> Result<()> {
    for chunk in ids.chunks(IN_FLIGHT) {
        let mut stops = Vec::new();
        for id in chunk {
            let (c, id) = (client.clone(), id.clone());
            stops.push(tokio::spawn(async move {
                c.action("bench", &id, "stop", None).await?;
                c.wait("bench", &id, "stopped", 30).await
            }));
        }
        for s in stops {
            s.await??;
        }
    }
    Ok(())
}

/// Listing 1000 stopped machines, against `GET /healthz`.
async fn list_latency(client: &Client, url: &str, token: &str) -> Result<()> {
    let listed: Vec<Machine> = client.list_machines("bench", false).await?;
    if listed.len() != TOTAL_MACHINES || listed.iter().any(|m| m.state != "stopped") {
        bail!(
            "expected {TOTAL_MACHINES} stopped machines, found {}",
            listed.len()
        );
    }
    let mut lat = Vec::new();
    let mut floor = Vec::new();
    let http = reqwest::Client::new();
    for _ in 0..LIST_ROUNDS {
        // Timed: the request and the whole body; decoding it is the client's business.
        let t = Instant::now();
        let body = http
            .get(format!("{url}/v1/apps/bench/machines"))
            .bearer_auth(token)
            .send()
            .await?
            .bytes()
            .await?;
        lat.push(t.elapsed());
        let v: Vec<Value> = serde_json::from_slice(&body)?;
        if v.len() != TOTAL_MACHINES {
            bail!("listing returned {} machines", v.len());
        }
        let t = Instant::now();
        http.get(format!("{url}/healthz"))
            .send()
            .await?
            .text()
            .await?;
        floor.push(t.elapsed());
    }
    let (list, floor) = (Stats::new(lat), Stats::new(floor));
    println!(
        "GET /v1/apps/bench/machines ({TOTAL_MACHINES} machines): p50 {} p99 {} | GET /healthz p50 {} p99 {} | ratio p50 {}",
        ms(list.p50()),
        ms(list.p99()),
        ms(floor.p50()),
        ms(floor.p99()),
        ratio(list.p50(), floor.p50())
    );
    Ok(())
}
