//! The edge proxy benchmark, in one run against the same upstream machine (an nginx
//! answering `200 ok`, run by the process driver): requests/s and latency through
//! Hangar's proxy, through nginx configured as a reverse proxy, and direct (wrk, 64
//! connections); first byte from a stopped and from a suspended machine (on containerd
//! when this host can run it, else on the process driver); and memory per 1,000 idle
//! keep-alive connections, Hangar's against nginx's.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::common::{ms, rss_kib, BenchServer, Stats};

const ROUNDS: usize = 20;
const WRK_SECONDS: &str = "8s";
const CONNECTIONS: &str = "64";
const IDLE: usize = 1000;

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// An nginx with the given `http` block, in its own prefix directory; killed on drop.
struct Nginx {
    child: Child,
}

impl Nginx {
    fn start(dir: &Path, workers: &str, http: &str) -> Result<Nginx> {
        std::fs::create_dir_all(dir.join("logs"))?;
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes {workers};\npid {pid};\nerror_log {dir}/logs/error.log;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{ access_log off; client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;\n{http}\n}}\n",
                pid = dir.join("nginx.pid").display(),
                dir = dir.display(),
            ),
        )?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .spawn()
            .context("run nginx (apt install nginx-light)")?;
        Ok(Nginx { child })
    }

    /// RSS of the master and its workers.
    fn rss_kib(&self) -> u64 {
        let master = self.child.id();
        let mut total = rss_kib(master);
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok());
                if ppid == Some(master) {
                    if let Some(pid) = e.file_name().to_str().and_then(|p| p.parse().ok()) {
                        total += rss_kib(pid);
                    }
                }
            }
        }
        total
    }
}

impl Drop for Nginx {
    /// SIGTERM, so the master takes its workers down (after SIGKILL they would live on),
    /// then SIGKILL if it lingers.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Load {
    rps: f64,
    p50: String,
    p99: String,
    p99_ms: f64,
}

fn latency_ms(s: &str) -> f64 {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = n.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        _ => f64::NAN,
    }
}

/// Runs wrk against `url` with `host` and reads its summary.
fn wrk(url: &str, host: &str) -> Result<Load> {
    let out = Command::new("wrk")
        .args(["-t2", "-c", CONNECTIONS, "-d", WRK_SECONDS, "--latency"])
        .args(["-H", &format!("Host: {host}"), url])
        .output()
        .context("run wrk (apt install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
    };
    let rps: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("wrk output: {text}"))?;
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        println!("  note: wrk saw errors against {url}: {}", text.trim());
    }
    let p50 = field("50%").unwrap_or_default();
    let p99 = field("99%").unwrap_or_default();
    Ok(Load {
        rps,
        p99_ms: latency_ms(&p99),
        p50,
        p99,
    })
}

async fn create(s: &BenchServer, app: &str, config: Value) -> Result<String> {
    let m: Value = s
        .client
        .call(
            reqwest::Method::POST,
            &format!("/apps/{app}/machines"),
            Some(&json!({ "config": config })),
            &[],
        )
        .await?;
    let id = m["id"].as_str().context("machine id")?.to_string();
    s.client.wait(app, &id, "started", 60).await?;
    Ok(id)
}

/// Opens `n` keep-alive connections, each having made one request, and returns them.
fn idle_connections(port: u16, host: &str, n: usize) -> Result<Vec<TcpStream>> {
    let mut out = Vec::with_capacity(n);
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    for _ in 0..n {
        let mut c = TcpStream::connect(("127.0.0.1", port))?;
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        c.write_all(request.as_bytes())?;
        let mut buf = [0u8; 1024];
        let got = c.read(&mut buf)?;
        if !buf[..got].starts_with(b"HTTP/1.1 200") {
            bail!(
                "idle connection got {:?}",
                String::from_utf8_lossy(&buf[..got])
            );
        }
        out.push(c);
    }
    Ok(out)
}

async fn throughput_and_memory() -> Result<()> {
    let s = BenchServer::start("process").await?;
    s.client.create_app("web", "personal").await?;
    let upstream = free_port()?;
    let dir = s.dir.path().join("upstream");
    std::fs::create_dir_all(&dir)?;
    let conf_dir = dir.display().to_string();
    // The machine: nginx answering 200 from memory, one worker.
    let script = format!(
        "mkdir -p {conf_dir}/logs && printf 'worker_processes 1;\\npid {conf_dir}/nginx.pid;\\nerror_log {conf_dir}/logs/error.log;\\nevents {{ worker_connections 4096; }}\\nhttp {{ access_log off; server {{ listen 127.0.0.1:{upstream}; keepalive_requests 100000; location / {{ return 200 \"ok\\\\n\"; }} }} }}\\n' > {conf_dir}/nginx.conf && exec nginx -p {conf_dir} -c {conf_dir}/nginx.conf -g 'daemon off;'"
    );
    create(
        &s,
        "web",
        json!({"image": "nginx", "init": {"exec": ["/bin/sh", "-c", script]},
            "services": [{"protocol": "tcp", "internal_port": upstream,
                "concurrency": {"type": "requests", "soft_limit": 1000},
                "ports": [{"port": 80, "handlers": ["http"]}]}]}),
    )
    .await?;
    let nginx_port = free_port()?;
    let peer = Nginx::start(
        &s.dir.path().join("peer"),
        "2",
        &format!(
            "upstream machine {{ server 127.0.0.1:{upstream}; keepalive 128; }}\n\
             server {{ listen 127.0.0.1:{nginx_port}; location / {{ proxy_pass http://machine; \
             proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}"
        ),
    )?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let host = "web.localhost";
    // Warm every path once.
    for port in [upstream, nginx_port, s.http_port] {
        let _ = idle_connections(port, host, 1)?;
    }
    let direct = wrk(&format!("http://127.0.0.1:{upstream}/"), host)?;
    let nginx = wrk(&format!("http://127.0.0.1:{nginx_port}/"), host)?;
    let hangar = wrk(&format!("http://127.0.0.1:{}/", s.http_port), host)?;
    println!("throughput, wrk -t2 -c{CONNECTIONS} -d{WRK_SECONDS}, same nginx machine upstream:");
    for (name, l) in [
        ("direct", &direct),
        ("nginx proxy", &nginx),
        ("hangar proxy", &hangar),
    ] {
        println!(
            "  {name:<13} {:>9.0} req/s  p50 {:>9}  p99 {:>9}",
            l.rps, l.p50, l.p99
        );
    }
    println!(
        "  hangar/nginx throughput {:.2}x; p99 added over direct: hangar {:.2} ms, nginx {:.2} ms",
        hangar.rps / nginx.rps,
        hangar.p99_ms - direct.p99_ms,
        nginx.p99_ms - direct.p99_ms
    );

    // Memory per 1,000 idle keep-alive connections.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(s.pid());
    let held = idle_connections(s.http_port, host, IDLE)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(s.pid());
    drop(held);
    let nginx_before = peer.rss_kib();
    let held = idle_connections(nginx_port, host, IDLE)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let nginx_after = peer.rss_kib();
    drop(held);
    println!(
        "memory for {IDLE} idle keep-alive connections: hangar +{:.1} MiB (server RSS {:.1} MiB) | nginx +{:.1} MiB",
        after.saturating_sub(before) as f64 / 1024.0,
        after as f64 / 1024.0,
        nginx_after.saturating_sub(nginx_before) as f64 / 1024.0,
    );
    Ok(())
}

/// Time to the first byte of an answer through the proxy.
async fn first_byte(client: &reqwest::Client, port: u16, host: &str) -> Result<Duration> {
    let t = Instant::now();
    let r = client
        .get(format!("http://127.0.0.1:{port}/"))
        .header("host", host)
        .send()
        .await?;
    let elapsed = t.elapsed();
    if !r.status().is_success() {
        bail!("first request answered {}", r.status());
    }
    Ok(elapsed)
}

/// Stops (or suspends) the machine and times the first byte of a request that wakes it.
async fn wakes(
    s: &BenchServer,
    client: &reqwest::Client,
    app: &str,
    id: &str,
    suspend: bool,
) -> Result<Duration> {
    if suspend {
        s.client.action(app, id, "suspend", None).await?;
        s.client.wait(app, id, "suspended", 60).await?;
    } else {
        s.client
            .action(app, id, "stop", Some(&json!({"signal": "SIGKILL"})))
            .await?;
        s.client.wait(app, id, "stopped", 60).await?;
    }
    first_byte(client, s.http_port, &format!("{app}.localhost")).await
}

async fn wake_latency() -> Result<()> {
    let containerd = hangar_testkit::containerd_available().is_ok();
    let driver = if containerd { "containerd" } else { "process" };
    let registry = containerd.then(hangar_testkit::TestRegistry::start);
    let s = BenchServer::start(driver).await?;
    let image = match &registry {
        Some(r) => json!(r.push_busybox("bench/busybox", "1").await),
        None => json!("busybox"),
    };
    // The same web machine twice: once with no check, once with an HTTP check on its
    // service (1 s grace period, 1 s interval) that a woken request must not wait for.
    let mut ids = Vec::new();
    for (app, checks) in [
        ("wake", json!([])),
        (
            "wakecheck",
            json!([{"type": "http", "path": "/", "grace_period": "1s", "interval": "1s"}]),
        ),
    ] {
        s.client.create_app(app, "personal").await?;
        let port = free_port()?;
        let config = json!({"image": image, "init": {"exec": ["/bin/sh", "-c",
                format!("mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec busybox httpd -f -p {port} -h /tmp/www")]},
            "services": [{"protocol": "tcp", "internal_port": port, "checks": checks,
                "ports": [{"port": 80, "handlers": ["http"]}]}]});
        ids.push((app, create(&s, app, config).await?));
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    for (app, _) in &ids {
        // Ready once: the check has passed before the rounds begin.
        let until = Instant::now() + Duration::from_secs(30);
        while first_byte(&client, s.http_port, &format!("{app}.localhost"))
            .await
            .is_err()
        {
            if Instant::now() > until {
                bail!("{app} never answered through the proxy");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (mut stopped, mut checked, mut suspended) = (Vec::new(), Vec::new(), Vec::new());
    let (plain, with_check) = (&ids[0], &ids[1]);
    for _ in 0..ROUNDS {
        stopped.push(wakes(&s, &client, plain.0, &plain.1, false).await?);
        checked.push(wakes(&s, &client, with_check.0, &with_check.1, false).await?);
        suspended.push(wakes(&s, &client, plain.0, &plain.1, true).await?);
    }
    let (a, c, b) = (
        Stats::new(stopped),
        Stats::new(checked),
        Stats::new(suspended),
    );
    println!("first byte through the proxy, {driver} driver, {ROUNDS} rounds:");
    println!(
        "  from stopped:                 p50 {} p99 {}",
        ms(a.p50()),
        ms(a.p99())
    );
    println!(
        "  from stopped, with a check:   p50 {} p99 {} ({:.2}x the machine without one)",
        ms(c.p50()),
        ms(c.p99()),
        c.p50().as_secs_f64() / a.p50().as_secs_f64().max(1e-9)
    );
    println!(
        "  from suspended:               p50 {} p99 {}",
        ms(b.p50()),
        ms(b.p99())
    );
    Ok(())
}

pub async fn main() -> Result<()> {
    println!("hangar-bench proxy: loopback, 2 cores");
    throughput_and_memory().await?;
    wake_latency().await
}
