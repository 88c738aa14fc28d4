//! Private networking, in one run: `.internal` DNS queries per second and latency with
//! `dnsperf` against Hangar's resolver and against unbound serving a zone of the same
//! size, each on one thread on loopback; `hangar proxy` throughput and connection
//! setup against a direct connection to the same service in a machine; and the round
//! trip of one keystroke through `hangar ssh console`'s terminal. The DNS part needs
//! unbound and dnsperf; the rest root, containerd, runc and docker-registry.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hangar_agent::dns::names::{Member, Network};
use hangar_testkit::{containerd_available, TestRegistry, TestResolver};
use hangar_types::console::{Frame, FrameReader};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{ms, BenchServer, Stats};

const APPS: usize = 50;
const MACHINES_PER_APP: usize = 4;
const DNS_SECONDS: &str = "10";

/// An org's network of `APPS` apps with `MACHINES_PER_APP` started machines each.
fn network() -> Network {
    let mut members = Vec::new();
    for a in 0..APPS {
        for m in 0..MACHINES_PER_APP {
            members.push(Member {
                machine_id: format!("{a:07x}{m:07x}"),
                app: format!("app{a}"),
                region: if m % 2 == 0 { "ord" } else { "iad" }.into(),
                process_group: "app".into(),
                address: Ipv6Addr::new(0xfdaa, 0, 1, 0xa7b, a as u16, m as u16, 0, 2),
                started: true,
                metadata: Default::default(),
            });
        }
    }
    Network {
        members,
        ..Default::default()
    }
}

/// What one dnsperf run measured.
struct DnsRun {
    qps: f64,
    latency: Stats,
}

/// Runs dnsperf against `port` on loopback: queries per second under load, then each
/// query's latency in a verbose pass.
fn dnsperf(port: u16, queries: &std::path::Path) -> Result<DnsRun> {
    let run = |extra: &[&str], seconds: &str| -> Result<String> {
        let out = Command::new("dnsperf")
            .args(["-s", "127.0.0.1", "-p", &port.to_string(), "-d"])
            .arg(queries)
            .args(["-l", seconds, "-c", "4", "-q", "100"])
            .args(extra)
            .stderr(Stdio::null())
            .output()
            .context("run dnsperf (apt install dnsperf)")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let load = run(&[], DNS_SECONDS)?;
    let qps = load
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries per second:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("dnsperf printed no rate:\n{load}"))?;
    if !load.contains("NOERROR") || load.contains("NXDOMAIN") {
        bail!("the resolver did not answer every query:\n{load}");
    }
    let verbose = run(&["-v"], "3")?;
    let samples: Vec<Duration> = verbose
        .lines()
        .filter(|l| l.starts_with("> NOERROR"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .collect();
    Ok(DnsRun {
        qps,
        latency: Stats::new(samples),
    })
}

/// Hangar's resolver on one thread of its own, answering as it answers a machine of
/// the org; its UDP port.
fn hangar_resolver() -> Result<u16> {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let port = udp.local_addr()?.port();
    let tcp = std::net::TcpListener::bind(("127.0.0.1", port))?;
    udp.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    let (ready, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        runtime.block_on(async move {
            let sockets = tokio::net::UdpSocket::from_std(udp)
                .and_then(|u| Ok((u, tokio::net::TcpListener::from_std(tcp)?)));
            let served = sockets.map_err(|e| e.to_string()).and_then(|(udp, tcp)| {
                hangar_agent::dns::FixedResolver::serve(
                    HashMap::from([(1, network())]),
                    ("0000000000000000", 1),
                    udp,
                    tcp,
                    &Default::default(),
                )
            });
            match served {
                Ok(_server) => {
                    let _ = ready.send(Ok(()));
                    std::future::pending::<()>().await;
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            }
        });
    });
    started
        .recv()
        .context("the resolver thread ended")?
        .map_err(|e| anyhow::anyhow!("start Hangar's resolver: {e}"))?;
    Ok(port)
}

async fn dns() -> Result<()> {
    if let Err(why) = hangar_testkit::dns_tools_available() {
        bail!("the DNS benchmark needs {why} fixed");
    }
    let dir = tempfile::tempdir()?;
    let queries = dir.path().join("queries");
    let lines: String = (0..APPS)
        .map(|a| format!("app{a}.internal AAAA\n"))
        .collect();
    std::fs::write(&queries, lines)?;
    let records: Vec<String> = network()
        .members
        .iter()
        .map(|m| format!("{}.internal. 5 IN AAAA {}", m.app, m.address))
        .collect();
    let unbound = TestResolver::start("internal.", &records);
    let hangar = hangar_resolver()?;
    let ours = dnsperf(hangar, &queries)?;
    let peer = dnsperf(unbound.addr.port(), &queries)?;
    println!(
        "\n.internal DNS, <app>.internal AAAA ({APPS} apps x {MACHINES_PER_APP} machines), dnsperf -c 4 on loopback, one resolver thread each:"
    );
    println!("{:<10} {:>12} {:>12} {:>12}", "", "queries/s", "p50", "p99");
    for (name, r) in [("hangar", &ours), ("unbound", &peer)] {
        println!(
            "{name:<10} {:>12.0} {:>12} {:>12}",
            r.qps,
            ms(r.latency.p50()),
            ms(r.latency.p99())
        );
    }
    println!("hangar/unbound qps: {:.2}x", ours.qps / peer.qps.max(1.0));
    Ok(())
}

/// Moves `bytes` through a connection to an echo service: the time until all are
/// back.
async fn echo_round(addr: std::net::SocketAddr, bytes: usize) -> Result<Duration> {
    let started = Instant::now();
    let mut c = TcpStream::connect(addr).await?;
    c.set_nodelay(true)?;
    let (mut r, mut w) = c.split();
    let payload = vec![0x5au8; 256 * 1024];
    let send = async {
        let mut left = bytes;
        while left > 0 {
            let n = left.min(payload.len());
            w.write_all(&payload[..n]).await?;
            left -= n;
        }
        w.shutdown().await
    };
    let recv = async {
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0usize;
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok::<usize, std::io::Error>(got);
            }
            got += n;
        }
    };
    let (sent, got) = tokio::join!(send, recv);
    sent?;
    let got = got?;
    if got != bytes {
        bail!("{got} of {bytes} bytes came back");
    }
    Ok(started.elapsed())
}

/// How long a connection takes to carry one small message there and back.
async fn first_byte(addr: std::net::SocketAddr) -> Result<Duration> {
    let started = Instant::now();
    let mut c = TcpStream::connect(addr).await?;
    c.write_all(b"x").await?;
    let mut b = [0u8; 1];
    c.read_exact(&mut b).await?;
    Ok(started.elapsed())
}

async fn tunnel_and_console() -> Result<()> {
    if let Err(why) = containerd_available() {
        bail!("the proxy and console benchmark needs {why} fixed");
    }
    let registry = TestRegistry::start();
    let image = registry.push_busybox("bench/busybox", "1").await;
    let s = BenchServer::start("containerd").await?;
    s.client.create_app("bench", "personal").await?;
    let m: Value = s
        .client
        .call(
            reqwest::Method::POST,
            "/apps/bench/machines",
            Some(&json!({"config": {"image": image,
                "init": {"exec": ["/bin/nc", "-ll", "-p", "7000", "-e", "/bin/cat"]}}})),
            &[],
        )
        .await?;
    let id = m["id"].as_str().context("machine id")?.to_string();
    s.client.wait("bench", &id, "started", 60).await?;
    let private: Ipv6Addr = s
        .client
        .get_machine("bench", &id)
        .await?
        .private_ip
        .parse()?;
    let direct = std::net::SocketAddr::from((private, 7000));

    // `hangar proxy` on a local port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let hangar = crate::common::hangar_binary()?;
    let mut forward = tokio::process::Command::new(hangar)
        .args(["proxy", &format!("{port}:7000"), "-a", "bench"])
        .env("HANGAR_API_URL", &s.url)
        .env("HANGAR_API_TOKEN", &s.token)
        .env("HANGAR_CONFIG", s.dir.path().join("cli.toml"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut line = String::new();
    {
        use tokio::io::AsyncBufReadExt;
        let out = forward.stdout.take().context("proxy output")?;
        tokio::io::BufReader::new(out).read_line(&mut line).await?;
    }
    if !line.starts_with("Proxying local port") {
        bail!("hangar proxy did not start: {line}");
    }
    let tunnel = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    const BYTES: usize = 64 << 20;
    let (mut through, mut straight) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        through.push(echo_round(tunnel, BYTES).await?);
        straight.push(echo_round(direct, BYTES).await?);
    }
    let (through, straight) = (Stats::new(through), Stats::new(straight));
    let rate = |d: Duration| 2.0 * BYTES as f64 / d.as_secs_f64() / 1e6;
    let (mut setup_t, mut setup_d) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        setup_t.push(first_byte(tunnel).await?);
        setup_d.push(first_byte(direct).await?);
    }
    let (setup_t, setup_d) = (Stats::new(setup_t), Stats::new(setup_d));
    println!("\nhangar proxy vs a direct connection to the machine's 6PN address (busybox nc echo, 64 MiB each way, 5 rounds):");
    println!(
        "{:<10} {:>14} {:>16} {:>16}",
        "", "MB/s (p50)", "connect+1B p50", "connect+1B p99"
    );
    println!(
        "{:<10} {:>14.0} {:>16} {:>16}",
        "proxy",
        rate(through.p50()),
        ms(setup_t.p50()),
        ms(setup_t.p99())
    );
    println!(
        "{:<10} {:>14.0} {:>16} {:>16}",
        "direct",
        rate(straight.p50()),
        ms(setup_d.p50()),
        ms(setup_d.p99())
    );
    println!(
        "proxy/direct throughput: {:.2}x",
        rate(through.p50()) / rate(straight.p50()).max(1e-9)
    );
    drop(forward);

    // One keystroke through a console's terminal: sent, echoed by the machine's PTY.
    let m: Value = s
        .client
        .call(
            reqwest::Method::POST,
            "/apps/bench/machines",
            Some(&json!({"config": {"image": image, "init": {"exec": ["/bin/sleep", "3600"]}}})),
            &[],
        )
        .await?;
    let shell = m["id"].as_str().context("machine id")?.to_string();
    s.client.wait("bench", &shell, "started", 60).await?;
    let req = hangar_client::ConsoleRequest {
        command: "/bin/cat".into(),
        tty: true,
        rows: 24,
        cols: 80,
        user: None,
    };
    let mut session = s.client.open_console("bench", &shell, &req).await?;
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; 4096];
    let mut rounds = Vec::new();
    for i in 0..300u32 {
        let key = [b'a' + (i % 26) as u8];
        let started = Instant::now();
        session
            .write_all(&Frame::Stdin(key.to_vec()).encode())
            .await?;
        'echo: loop {
            let n = tokio::time::timeout(Duration::from_secs(5), session.read(&mut buf))
                .await
                .context("no echo within 5 s")??;
            if n == 0 {
                bail!("the console closed");
            }
            reader.push(&buf[..n]);
            while let Some(f) = reader.next_frame() {
                if let Frame::Stdout(b) = f? {
                    if b.contains(&key[0]) {
                        break 'echo;
                    }
                }
            }
        }
        rounds.push(started.elapsed());
    }
    let rounds = Stats::new(rounds);
    println!(
        "\nssh console keystroke round trip (PTY echo, 300 keys): p50 {}, p99 {}",
        ms(rounds.p50()),
        ms(rounds.p99())
    );
    Ok(())
}

pub async fn main() -> Result<()> {
    dns().await?;
    tunnel_and_console().await
}
