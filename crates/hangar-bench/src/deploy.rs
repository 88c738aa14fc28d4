//! `hangar-bench deploy`: the wall time of deploying examples/web (with a release
//! command) to 10 machines with each strategy on containerd, and how it splits — build,
//! release command, per-machine replace — read from the deploy's own progress events.
//! The deployer's overhead is the time no machine was being replaced and no release
//! command ran. The peer is a client driving the same replace one machine at a time
//! through the Machines API (update, wait started, wait for checks), measured against
//! a server-side rolling deploy with `--max-unavailable 1`.
//!
//! Needs root, containerd, runc, buildah, docker-registry and busybox-static.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hangar_types::deploy::DeployEvent;
use hangar_types::requests::CreateMachineRequest;

use crate::common::{hangar_binary, ratio, BenchServer};

const MACHINES: usize = 10;

/// Runs the CLI against the server in `dir`; its standard output, or why it failed.
pub(crate) fn cli(s: &BenchServer, dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(hangar_binary()?)
        .current_dir(dir)
        .args(args)
        .env("HANGAR_API_URL", &s.url)
        .env("HANGAR_API_TOKEN", &s.token)
        .env("HANGAR_CONFIG", s.dir.path().join("cli.toml"))
        .output()?;
    if !out.status.success() {
        bail!(
            "hangar {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Union of intervals, in milliseconds.
fn covered(mut spans: Vec<(i64, i64)>) -> i64 {
    spans.sort();
    let (mut total, mut end) = (0, i64::MIN);
    for (a, b) in spans {
        if b <= end {
            continue;
        }
        total += b - a.max(end);
        end = b;
    }
    total
}

/// How a deploy's time split, from its progress events.
struct Split {
    server_wall: i64,
    release_command: i64,
    /// Per machine: replace time (update/create to healthy).
    machines: Vec<i64>,
    busy: i64,
}

fn split(events: &[DeployEvent]) -> Split {
    let at = |pred: &dyn Fn(&DeployEvent) -> bool| events.iter().find(|e| pred(e)).map(|e| e.at);
    let first = events.first().map(|e| e.at).unwrap_or(0);
    let last = events.last().map(|e| e.at).unwrap_or(0);
    let rc = match (
        at(&|e| e.message.starts_with("running release_command")),
        at(&|e| e.message.starts_with("release_command completed")),
    ) {
        (Some(a), Some(b)) => (a, b),
        _ => (0, 0),
    };
    let mut spans = Vec::new();
    let mut machines = Vec::new();
    let mut starts: std::collections::HashMap<String, i64> = Default::default();
    for e in events.iter().filter(|e| e.kind == "machine") {
        let id = e.machine_id.clone().unwrap_or_default();
        let m = e.message.as_str();
        if m.starts_with("updating to")
            || m.starts_with("green machine created")
            || m == "canary created"
        {
            starts.entry(id).or_insert(e.at);
        } else if m == "updated and healthy"
            || m == "updated"
            || m == "green machine healthy"
            || m == "canary healthy; destroyed"
        {
            if let Some(a) = starts.remove(&id) {
                spans.push((a, e.at));
                machines.push(e.at - a);
            }
        }
    }
    // Draining and destroying the blue machines is the strategy's own work.
    if let Some(moved) = at(&|e| e.message.starts_with("traffic moved to green")) {
        let last_blue = events
            .iter()
            .filter(|e| e.message == "blue machine destroyed")
            .map(|e| e.at)
            .max()
            .unwrap_or(moved);
        spans.push((moved, last_blue));
    }
    if rc.1 > rc.0 {
        spans.push(rc);
    }
    Split {
        server_wall: last - first,
        release_command: rc.1 - rc.0,
        busy: covered(spans),
        machines,
    }
}

async fn events_of(s: &BenchServer, app: &str) -> Result<Vec<DeployEvent>> {
    let list = s.client.releases(app, 1).await?;
    let r = list.releases.first().context("no release")?;
    let mut events = Vec::new();
    s.client
        .follow_deploy(app, &r.id, |e| events.push(e.clone()))
        .await?;
    Ok(events)
}

/// The peer: replace every machine one at a time from the client, as a client-side
/// deploy loop does (update, wait started, wait for its checks).
async fn client_side_rolling(
    s: &BenchServer,
    app: &str,
    round: usize,
) -> Result<(Duration, usize)> {
    let machines = s.client.list_machines(app, false).await?;
    let started: Vec<_> = machines.iter().filter(|m| m.state == "started").collect();
    let t = Instant::now();
    for m in &started {
        let mut config = m.config.clone();
        config
            .env
            .get_or_insert_with(Default::default)
            .insert("DEPLOY".into(), format!("client-{round}"));
        let req = CreateMachineRequest {
            config: Some(config),
            ..Default::default()
        };
        let updated = s.client.update_machine(app, &m.id, &req, None).await?;
        // The new version started, and its own checks (results start empty each run).
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let now = s.client.get_machine(app, &m.id).await?;
            let fresh = now.instance_id == updated.instance_id && now.state == "started";
            if fresh
                && !now.checks.is_empty()
                && now
                    .checks
                    .iter()
                    .all(|c| c.status == hangar_types::CheckState::Passing)
            {
                break;
            }
            if Instant::now() > until {
                bail!("machine {} never passed its checks", m.id);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok((t.elapsed(), started.len()))
}

fn secs(ms: i64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

pub async fn main() -> Result<()> {
    if let Err(why) = hangar_testkit::builds_available() {
        bail!("the deploy benchmark needs root, containerd and buildah: {why}");
    }
    let registry_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let s = BenchServer::start_with(
        "containerd",
        &["--registry-listen", &format!("127.0.0.1:{registry_port}")],
    )
    .await?;
    let work = tempfile::tempdir()?;
    let dir = example_app(work.path())?;
    cli(&s, &dir, &["apps", "create", "bench"])?;
    println!(
        "deploy benchmark: examples/web with a release command, {MACHINES} machines, containerd"
    );
    let image = build_and_first_deploy(&s, &dir)?;

    println!();
    println!(
        "  strategy                 wall     server   release_cmd  replace p50  busy     overhead"
    );
    let (round, rolling_one) = strategy_rounds(&s, &dir, &image).await?;
    let (peer, replaced) = client_side_rolling(&s, "bench", round + 1).await?;
    println!();
    println!(
        "  peer: client-side loop, 1 machine at a time over the API: {:.2} s for {replaced} machines; server rolling (1 at a time) {:.2} s for {MACHINES} = {} of the peer",
        peer.as_secs_f64(),
        rolling_one.as_secs_f64(),
        ratio(rolling_one, peer)
    );
    Ok(())
}

/// examples/web under `work`, served over plain HTTP and with a release command.
fn example_app(work: &Path) -> Result<PathBuf> {
    let dir: PathBuf = hangar_testkit::example("web", "bench", work);
    let toml = std::fs::read_to_string(dir.join("fly.toml"))?
        .replace("force_https = true", "force_https = false")
        .replace(
            "[deploy]\n  strategy = \"rolling\"",
            "[deploy]\n  strategy = \"rolling\"\n  release_command = \"/bin/busybox true\"",
        );
    std::fs::write(dir.join("fly.toml"), toml)?;
    Ok(dir)
}

/// Builds the app's image, deploys it a first time and scales it to MACHINES; returns
/// the image.
fn build_and_first_deploy(s: &BenchServer, dir: &Path) -> Result<String> {
    let t = Instant::now();
    let out = cli(s, dir, &["deploy", "--build-only"])?;
    let build = t.elapsed();
    let image = out
        .lines()
        .find_map(|l| l.strip_prefix("image: "))
        .context("the build named no image")?
        .to_string();
    println!(
        "  build (buildah, push to the platform registry): {:.2} s",
        build.as_secs_f64()
    );
    let t = Instant::now();
    cli(s, dir, &["deploy", "--image", &image])?;
    println!(
        "  first deploy (release command, 2 new machines): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    cli(
        s,
        dir,
        &[
            "scale",
            "count",
            &MACHINES.to_string(),
            "-a",
            "bench",
            "--yes",
        ],
    )?;
    Ok(image)
}

/// Deploys the image once with each strategy, printing how each deploy's time split;
/// returns the rounds deployed and the wall time of rolling one machine at a time.
async fn strategy_rounds(s: &BenchServer, dir: &Path, image: &str) -> Result<(usize, Duration)> {
    let mut round = 0;
    let mut rolling_one = Duration::ZERO;
    for (name, extra) in [
        ("rolling", vec![]),
        ("rolling (1 at a time)", vec!["--max-unavailable", "1"]),
        ("immediate", vec![]),
        ("canary", vec![]),
        ("bluegreen", vec![]),
    ] {
        round += 1;
        let strategy = name.split(' ').next().unwrap_or(name);
        let env = format!("DEPLOY={round}");
        let mut args = vec![
            "deploy",
            "--image",
            image,
            "--strategy",
            strategy,
            "-e",
            &env,
        ];
        args.extend(extra);
        let t = Instant::now();
        cli(s, dir, &args)?;
        let wall = t.elapsed();
        if name == "rolling (1 at a time)" {
            rolling_one = wall;
        }
        let sp = split(&events_of(s, "bench").await?);
        print_row(name, wall, &sp);
    }
    Ok((round, rolling_one))
}

/// One strategy's row of the table.
fn print_row(name: &str, wall: Duration, sp: &Split) {
    let mut m = sp.machines.clone();
    m.sort();
    let p50 = m.get(m.len() / 2).copied().unwrap_or(0);
    let overhead = sp.server_wall - sp.busy;
    let pct = if sp.busy > 0 {
        100.0 * overhead as f64 / sp.busy as f64
    } else {
        0.0
    };
    println!(
        "  {name:<24} {:<8} {:<8} {:<12} {:<12} {:<8} {} ({pct:.1}% of busy)",
        format!("{:.2} s", wall.as_secs_f64()),
        secs(sp.server_wall),
        secs(sp.release_command),
        secs(p50),
        secs(sp.busy),
        secs(overhead),
    );
}

#[cfg(test)]
mod tests {
    use super::covered;

    #[test]
    fn covered_merges_overlaps() {
        assert_eq!(covered(vec![(0, 10), (5, 15), (20, 30)]), 25);
        assert_eq!(covered(vec![(0, 10), (2, 3)]), 10);
    }
}
