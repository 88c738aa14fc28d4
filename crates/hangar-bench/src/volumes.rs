//! The volumes benchmark (root needed: loop devices and mount): creating a 10 GB volume
//! against making the same filesystem by hand (`truncate`, `mkfs.ext4`, `mount -o
//! loop`), machine create→started with a volume against without, and sequential write
//! and read through a machine's volume against the same file on the host's filesystem,
//! and a snapshot of a 1 GB volume holding 500 MB against `zstd` of the same data on the
//! command line, a second (incremental) snapshot after 10 MB more, and the time to
//! restore the first into a new volume.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hangar_client::Client;
use hangar_types::requests::CreateMachineRequest;
use hangar_types::volume::CreateVolumeRequest;
use hangar_types::MachineConfig;

use crate::common::{ms, ratio, BenchServer, Stats};

const VOLUMES: usize = 10;
const MACHINES: usize = 20;
const IO_MB: u64 = 512;
const IO_ROUNDS: usize = 7;
const SNAPSHOT_MB: u64 = 500;
const SNAPSHOT_ROUNDS: usize = 5;

pub async fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the volumes benchmark needs root (loop devices and mount)");
    }
    let server = BenchServer::start("process").await?;
    let client = &server.client;
    client.create_app("vbench", "personal").await?;
    println!("hangar-bench: volumes (loop-mounted ext4), process driver, loopback");
    create_volumes(client, &server.dir.path().join("by-hand")).await?;
    create_started(client).await?;
    throughput(client, &server.dir.path().join("host-file")).await?;
    snapshots(client, server.dir.path()).await?;
    Ok(())
}

fn volume_request(size_gb: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: Some("data".into()),
        size_gb: Some(size_gb),
        ..Default::default()
    }
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("run {program}"))?;
    if !status.success() {
        bail!("{program} {args:?} failed");
    }
    Ok(())
}

/// The same filesystem made by hand: the floor the API pays.
fn by_hand(dir: &Path, i: usize) -> Result<Duration> {
    let image = dir.join(format!("{i}.img"));
    let fs = dir.join(format!("{i}.fs"));
    std::fs::create_dir_all(&fs)?;
    let (image_s, fs_s) = (image.display().to_string(), fs.display().to_string());
    let t = Instant::now();
    run("truncate", &["-s", "10G", &image_s])?;
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
            &image_s,
        ],
    )?;
    run(
        "mount",
        &["-t", "ext4", "-o", "loop,noatime", &image_s, &fs_s],
    )?;
    let took = t.elapsed();
    run("umount", &[&fs_s])?;
    std::fs::remove_file(&image)?;
    Ok(took)
}

async fn create_volumes(client: &Client, dir: &Path) -> Result<()> {
    let mut api = Vec::new();
    let mut hand = Vec::new();
    for i in 0..VOLUMES {
        let t = Instant::now();
        let v = client.create_volume("vbench", &volume_request(10)).await?;
        api.push(t.elapsed());
        client.destroy_volume("vbench", &v.id).await?;
        hand.push(by_hand(dir, i)?);
    }
    let (api, hand) = (Stats::new(api), Stats::new(hand));
    println!(
        "create a 10 GB volume ({VOLUMES}x): API p50 {} p99 {} | by hand (truncate+mkfs+mount) p50 {} p99 {} | ratio {}",
        ms(api.p50()),
        ms(api.p99()),
        ms(hand.p50()),
        ms(hand.p99()),
        ratio(api.p50(), hand.p50())
    );
    Ok(())
}

fn machine(volume: Option<&str>) -> CreateMachineRequest {
    let mut config = serde_json::json!({
        "image": "bench", "init": {"exec": ["/bin/sleep", "3600"]}, "restart": {"policy": "no"}
    });
    if let Some(v) = volume {
        config["mounts"] = serde_json::json!([{"volume": v, "path": "/data"}]);
    }
    let config: MachineConfig = serde_json::from_value(config).expect("static config");
    CreateMachineRequest {
        config: Some(config),
        ..Default::default()
    }
}

async fn started(client: &Client, volume: Option<&str>) -> Result<(String, Duration)> {
    let t = Instant::now();
    let m = client.create_machine("vbench", &machine(volume)).await?;
    client.wait("vbench", &m.id, "started", 30).await?;
    Ok((m.id, t.elapsed()))
}

async fn create_started(client: &Client) -> Result<()> {
    let mut with = Vec::new();
    let mut without = Vec::new();
    for _ in 0..MACHINES {
        let v = client.create_volume("vbench", &volume_request(1)).await?;
        let (a, d) = started(client, Some(&v.id)).await?;
        with.push(d);
        let (b, d) = started(client, None).await?;
        without.push(d);
        for id in [a, b] {
            client.destroy_machine("vbench", &id, true).await?;
            client.wait("vbench", &id, "destroyed", 30).await?;
        }
        client.destroy_volume("vbench", &v.id).await?;
    }
    let (with, without) = (Stats::new(with), Stats::new(without));
    println!(
        "machine create->started ({MACHINES}x): with a volume p50 {} p99 {} | without p50 {} p99 {} | ratio {}",
        ms(with.p50()),
        ms(with.p99()),
        ms(without.p50()),
        ms(without.p99()),
        ratio(with.p50(), without.p50())
    );
    Ok(())
}

fn drop_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// Seconds a shell command takes in the machine.
async fn in_machine(client: &Client, id: &str, script: &str) -> Result<Duration> {
    let t = Instant::now();
    let out = client
        .exec(
            "vbench",
            id,
            vec!["/bin/sh".into(), "-c".into(), script.into()],
            Some(120),
        )
        .await?;
    if out.exit_code != 0 {
        bail!("{script} failed in the machine: {}", out.stderr);
    }
    Ok(t.elapsed())
}

fn on_host(script: &str) -> Result<Duration> {
    let t = Instant::now();
    run("/bin/sh", &["-c", script])?;
    Ok(t.elapsed())
}

async fn throughput(client: &Client, host_dir: &Path) -> Result<()> {
    let v = client.create_volume("vbench", &volume_request(2)).await?;
    let (id, _) = started(client, Some(&v.id)).await?;
    std::fs::create_dir_all(host_dir)?;
    let host_file = host_dir.join("file").display().to_string();
    let write = |target: &str| {
        format!("dd if=/dev/zero of={target} bs=1M count={IO_MB} conv=fdatasync status=none")
    };
    let read = |target: &str| format!("dd if={target} of=/dev/null bs=1M status=none");
    let mbps = |d: Duration| IO_MB as f64 / d.as_secs_f64();
    let (mut vw, mut vr, mut hw, mut hr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..IO_ROUNDS {
        vw.push(in_machine(client, &id, &write("data/file")).await?);
        drop_caches();
        vr.push(in_machine(client, &id, &read("data/file")).await?);
        hw.push(on_host(&write(&host_file))?);
        drop_caches();
        hr.push(on_host(&read(&host_file))?);
    }
    let p50 = |v: Vec<Duration>| Stats::new(v).p50();
    let (vw, vr, hw, hr) = (p50(vw), p50(vr), p50(hw), p50(hr));
    println!(
        "sequential write {IO_MB} MB (fdatasync), median of {IO_ROUNDS}: volume {:.0} MB/s | host file {:.0} MB/s | ratio {:.2}x",
        mbps(vw),
        mbps(hw),
        mbps(vw) / mbps(hw)
    );
    println!(
        "sequential read {IO_MB} MB (cold cache), median of {IO_ROUNDS}: volume {:.0} MB/s | host file {:.0} MB/s | ratio {:.2}x",
        mbps(vr),
        mbps(hr),
        mbps(vr) / mbps(hr)
    );
    client.destroy_machine("vbench", &id, true).await?;
    Ok(())
}

/// Bytes of the files under `dir`, all levels.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A snapshot of a 1 GB volume holding 500 MB of text-like data (base64 of random
/// bytes: it compresses as logs and databases do, not as zeros do), against `zstd -3` of
/// the same file; then a second snapshot after 10 MB more are written (incremental:
/// only changed blocks are stored), and restoring the first into a new volume. Each
/// round uses a fresh volume, so every first snapshot is a full one.
async fn snapshots(client: &Client, dir: &Path) -> Result<()> {
    let data = dir.join("snapshot-data");
    let raw = SNAPSHOT_MB * 3 / 4;
    run(
        "/bin/sh",
        &[
            "-c",
            &format!(
                "head -c {raw}M /dev/urandom | base64 -w0 > {}",
                data.display()
            ),
        ],
    )?;
    let out = dir.join("peer.zst").display().to_string();
    let (mut snap, mut peer, mut restore, mut again) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut stored, mut sent) = (0, 0);
    for _ in 0..SNAPSHOT_ROUNDS {
        let v = client.create_volume("vbench", &volume_request(1)).await?;
        let fs = dir.join("data").join("volumes").join(&v.id).join("fs");
        run(
            "cp",
            &[
                &data.display().to_string(),
                &fs.join("data").display().to_string(),
            ],
        )?;
        run("sync", &[])?;
        drop_caches();
        let t = Instant::now();
        let s = client.create_snapshot("vbench", &v.id).await?;
        snap.push(t.elapsed());
        stored = s.size;

        on_host(&format!(
            "head -c 7864320 /dev/urandom | base64 -w0 > {} && sync",
            fs.join("more").display()
        ))?;
        let chunks = dir.join("data").join("snapshots").join(&v.id);
        let before = dir_bytes(&chunks);
        drop_caches();
        let t = Instant::now();
        client.create_snapshot("vbench", &v.id).await?;
        again.push(t.elapsed());
        sent = dir_bytes(&chunks).saturating_sub(before);

        drop_caches();
        peer.push(on_host(&format!(
            "zstd -q -3 -T1 -f -o {out} {} && sync {out}",
            data.display()
        ))?);
        let t = Instant::now();
        let r = client
            .create_volume(
                "vbench",
                &CreateVolumeRequest {
                    snapshot_id: Some(s.id.clone()),
                    ..volume_request(1)
                },
            )
            .await?;
        restore.push(t.elapsed());
        client.destroy_volume("vbench", &r.id).await?;
        client.destroy_volume("vbench", &v.id).await?;
    }
    let peer_bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let (snap, peer, restore, again) = (
        Stats::new(snap),
        Stats::new(peer),
        Stats::new(restore),
        Stats::new(again),
    );
    let mbps = |d: Duration| SNAPSHOT_MB as f64 / d.as_secs_f64();
    println!(
        "snapshot of a 1 GB volume holding {SNAPSHOT_MB} MB, {SNAPSHOT_ROUNDS} rounds: p50 {} / p99 {} ({:.0} MB/s, {} MB stored) | zstd -3 of the file p50 {} ({:.0} MB/s, {} MB) | throughput ratio {:.2}x",
        ms(snap.p50()),
        ms(snap.p99()),
        mbps(snap.p50()),
        stored >> 20,
        ms(peer.p50()),
        mbps(peer.p50()),
        peer_bytes >> 20,
        peer.p50().as_secs_f64() / snap.p50().as_secs_f64(),
    );
    println!(
        "second snapshot after 10 MB more were written: p50 {} / p99 {} ({:.1} MB stored for it, {:.2}x the first's time)",
        ms(again.p50()),
        ms(again.p99()),
        sent as f64 / (1 << 20) as f64,
        again.p50().as_secs_f64() / snap.p50().as_secs_f64(),
    );
    println!(
        "restore of the first snapshot into a new 1 GB volume: p50 {} / p99 {}",
        ms(restore.p50()),
        ms(restore.p99())
    );
    Ok(())
}
