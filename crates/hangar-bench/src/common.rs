//! What both benchmarks share: percentiles, formatting, and a real `hangar server` in a
//! temp dir that is cleaned up afterwards (machines included).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hangar_client::Client;

pub struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self { samples }
    }
    fn pct(&self, p: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
        self.samples[i]
    }
    pub fn p50(&self) -> Duration {
        self.pct(0.5)
    }
    pub fn p99(&self) -> Duration {
        self.pct(0.99)
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub fn ratio(a: Duration, b: Duration) -> String {
    if b.is_zero() {
        return "n/a".into();
    }
    format!("{:.1}x", a.as_secs_f64() / b.as_secs_f64())
}

pub fn hangar_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::args().skip_while(|a| a != "--hangar").nth(1) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let sibling = exe.with_file_name("hangar");
    if sibling.exists() {
        return Ok(sibling);
    }
    bail!(
        "cannot find the hangar binary next to {}; pass its path with --hangar PATH",
        exe.display()
    )
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A running `hangar server` for a benchmark.
pub struct BenchServer {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub token: String,
    pub client: Client,
    /// Where the edge proxy takes HTTP.
    pub http_port: u16,
    child: Child,
}

impl BenchServer {
    pub async fn start(driver: &str) -> Result<BenchServer> {
        Self::start_with(driver, &[]).await
    }

    /// A server with extra `hangar server` arguments.
    pub async fn start_with(driver: &str, extra: &[&str]) -> Result<BenchServer> {
        Self::start_with_env(driver, extra, &[]).await
    }

    /// A server with extra arguments and environment variables.
    pub async fn start_with_env(
        driver: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<BenchServer> {
        let hangar = hangar_binary()?;
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let http_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&hangar)
            .args(["server", "--driver", driver, "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--api-listen",
                &format!("127.0.0.1:{port}"),
                "--http-listen",
                &format!("127.0.0.1:{http_port}"),
                "--https-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .envs(env.iter().copied())
            .env("HANGAR_CONFIG", dir.path().join("cli.toml"))
            .env(
                "HANGAR_LOG",
                std::env::var("HANGAR_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", hangar.display()))?;
        let token_file = dir.path().join("data").join("admin-token");
        let until = Instant::now() + Duration::from_secs(30);
        while !token_file.exists() || reqwest::get(format!("{url}/healthz")).await.is_err() {
            if Instant::now() > until {
                bail!("server did not start");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let token = std::fs::read_to_string(&token_file)?.trim().to_string();
        let client = Client::new(&url, &token);
        Ok(BenchServer {
            dir,
            url,
            token,
            client,
            http_port,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        hangar_testkit::cleanup(&self.data_dir());
    }
}
