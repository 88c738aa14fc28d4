//! The control plane's database benchmark: the same work on SQLite and on PostgreSQL,
//! side by side — create→started, listing 1000 machines, a rolling deploy of 10
//! machines, and change-feed delivery (`feed.rs`) — each figure with the
//! PostgreSQL/SQLite ratio. The process driver, so the
//! figures are the control plane's and not a container runtime's.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hangar_types::requests::CreateMachineRequest;
use hangar_types::MachineConfig;
use serde_json::Value;

use crate::common::{ms, ratio, BenchServer, Stats};
use crate::deploy::cli;

const STARTED: usize = 100;
const LISTED: usize = 1000;
const IN_FLIGHT: usize = 16;
const LIST_ROUNDS: usize = 50;
const DEPLOY_MACHINES: usize = 10;
const DEPLOYS: usize = 3;
/// Servers on PostgreSQL take their master key from the environment.
const BENCH_MASTER_KEY: &str = "62656e6368206d6173746572206b65792c206e6f74206120736563726574212e";

/// What one engine measured.
struct Figures {
    create: Stats,
    list: Stats,
    deploy: Stats,
}

fn request(skip_launch: bool) -> CreateMachineRequest {
    let config: MachineConfig = serde_json::from_value(serde_json::json!({
        "image": "bench", "init": {"exec": ["/bin/sleep", "3600"]}, "restart": {"policy": "no"}
    }))
    .expect("static config");
    CreateMachineRequest {
        config: Some(config),
        skip_launch: Some(skip_launch),
        ..Default::default()
    }
}

const FLY_TOML: &str = r#"
app = "deploybench"
kill_signal = "SIGTERM"
kill_timeout = "2s"

[env]
  ROUND = "0"

[processes]
  app = "/bin/sh -c 'exec sleep 3600'"
"#;

async fn measure(s: &BenchServer) -> Result<Figures> {
    let client = &s.client;
    client.create_app("bench", "personal").await?;
    let mut lat = Vec::new();
    for _ in 0..STARTED {
        let t = Instant::now();
        let m = client.create_machine("bench", &request(false)).await?;
        client.wait("bench", &m.id, "started", 30).await?;
        lat.push(t.elapsed());
    }
    let create = Stats::new(lat);

    // The rest of the 1000, created without starting, IN_FLIGHT at a time.
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::new();
    for _ in STARTED..LISTED {
        let permit = sem.clone().acquire_owned().await?;
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let r = c.create_machine("bench", &request(true)).await;
            drop(permit);
            r
        }));
    }
    for t in tasks {
        t.await??;
    }
    let http = reqwest::Client::new();
    let mut lat = Vec::new();
    for _ in 0..LIST_ROUNDS {
        let t = Instant::now();
        let body = http
            .get(format!("{}/v1/apps/bench/machines", s.url))
            .bearer_auth(&s.token)
            .send()
            .await?
            .bytes()
            .await?;
        lat.push(t.elapsed());
        let v: Vec<Value> = serde_json::from_slice(&body)?;
        if v.len() != LISTED {
            bail!("listing returned {} machines", v.len());
        }
    }
    let list = Stats::new(lat);

    let work = tempfile::tempdir()?;
    std::fs::write(work.path().join("fly.toml"), FLY_TOML)?;
    cli(s, work.path(), &["apps", "create", "deploybench"])?;
    cli(s, work.path(), &["deploy", "--image", "bench"])?;
    cli(
        s,
        work.path(),
        &[
            "scale",
            "count",
            &DEPLOY_MACHINES.to_string(),
            "-a",
            "deploybench",
            "--yes",
        ],
    )?;
    let mut lat = Vec::new();
    for round in 1..=DEPLOYS {
        let toml = FLY_TOML.replace("ROUND = \"0\"", &format!("ROUND = \"{round}\""));
        std::fs::write(work.path().join("fly.toml"), toml)?;
        let t = Instant::now();
        cli(s, work.path(), &["deploy", "--image", "bench"])?;
        lat.push(t.elapsed());
    }
    let deploy = Stats::new(lat);
    Ok(Figures {
        create,
        list,
        deploy,
    })
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Only the change-feed rows of the store benchmark.
pub async fn feed_only() -> Result<()> {
    let pg = hangar_testkit::TestPostgres::start_like_sqlite()
        .map_err(|why| anyhow::anyhow!("the feed benchmark needs PostgreSQL: {why}"))?;
    let (sqlite, postgres, notified) = crate::feed::delivery(&pg.fresh_database()).await?;
    println!("change feed: commit→consumer table        p50       p99       /SQLite");
    for (what, s) in [
        ("SQLite, same store", &sqlite),
        ("PostgreSQL, same store", &postgres),
        ("PostgreSQL, own connection (NOTIFY)", &notified),
    ] {
        println!(
            "  {what:<38} {:<9} {:<9} {}",
            ms(s.p50()),
            ms(s.p99()),
            ratio(s.p50(), sqlite.p50())
        );
    }
    Ok(())
}

pub async fn main() -> Result<()> {
    let pg = hangar_testkit::TestPostgres::start_like_sqlite()
        .map_err(|why| anyhow::anyhow!("the store benchmark needs PostgreSQL: {why}"))?;
    println!(
        "store benchmark: the control plane on SQLite (WAL, synchronous=NORMAL) and on PostgreSQL \
         (loopback, synchronous_commit=off), process driver, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let sqlite = {
        let s = BenchServer::start("process").await?;
        measure(&s).await?
    };
    let postgres = {
        let url = pg.fresh_database();
        let s = BenchServer::start_with_env(
            "process",
            &["--database", &url],
            &[("HANGAR_MASTER_KEY", BENCH_MASTER_KEY)],
        )
        .await?;
        measure(&s).await?
    };
    println!();
    println!(
        "                                   SQLite              PostgreSQL          PG/SQLite"
    );
    let row = |what: &str, a: &Stats, b: &Stats, f: fn(Duration) -> String| {
        println!(
            "  {what:<32} p50 {:<9} p99 {:<9} p50 {:<9} p99 {:<9} {}",
            f(a.p50()),
            f(a.p99()),
            f(b.p50()),
            f(b.p99()),
            ratio(b.p50(), a.p50())
        );
    };
    row(
        &format!("create→started ({STARTED} machines)"),
        &sqlite.create,
        &postgres.create,
        ms,
    );
    row(
        &format!("list {LISTED} machines ({LIST_ROUNDS} rounds)"),
        &sqlite.list,
        &postgres.list,
        ms,
    );
    row(
        &format!("rolling deploy of {DEPLOY_MACHINES} ({DEPLOYS} deploys)"),
        &sqlite.deploy,
        &postgres.deploy,
        secs,
    );
    let (sqlite_feed, pg_feed, pg_notified) = crate::feed::delivery(&pg.fresh_database()).await?;
    row(
        "change feed: commit→consumer table",
        &sqlite_feed,
        &pg_feed,
        ms,
    );
    println!(
        "  {:<32} {:<29} p50 {:<9} p99 {:<9} {}",
        "  …consumer on another connection",
        "(woken by LISTEN/NOTIFY)",
        ms(pg_notified.p50()),
        ms(pg_notified.p99()),
        ratio(pg_notified.p50(), sqlite_feed.p50())
    );
    Ok(())
}
