//! Test kit: a real `hangar server` in a temp dir, an HTTP helper that speaks to it, the
//! CLI with the right environment, and convergence helpers instead of sleeps.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod agent;
mod helpers;
pub use agent::agent_apart;
use agent::{split_args, TEST_AGENT_TOKEN};
pub use helpers::*;

pub const HANGAR: &str = env!("CARGO_BIN_EXE_hangar");

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The edge proxy's HTTP port.
    pub http_port: u16,
    pub https_port: u16,
    /// Where the platform registry listens once a build starts it.
    pub registry_port: u16,
    pub token: String,
    child: Option<Child>,
    /// The agent's own process, when the run has one (`HANGAR_TEST_AGENT=process`).
    agent: Option<Child>,
    /// Where that agent's interface listens.
    pub agent_port: u16,
    /// Whether the agent runs in a process of its own.
    apart: bool,
    http: reqwest::Client,
    server_args: Vec<String>,
    server_env: Vec<(String, String)>,
    /// A PostgreSQL database of this server's own, when the run is on PostgreSQL.
    pub database: Option<String>,
}

/// The master key servers on PostgreSQL are given (every control plane of one database
/// needs the same key).
pub const TEST_MASTER_KEY: &str =
    "6861616e6761722074657374206d6173746572206b657920666f722074657374";

/// Whether this run's servers keep their state on PostgreSQL
/// (`HANGAR_TEST_DATABASE=postgres`) rather than SQLite under the data dir.
pub fn on_postgres() -> bool {
    std::env::var("HANGAR_TEST_DATABASE").is_ok_and(|v| v == "postgres")
}

/// A fresh database on the test PostgreSQL, when the run is on PostgreSQL.
fn test_database() -> Option<String> {
    on_postgres().then(|| {
        hangar_testkit::TestPostgres::shared()
            .unwrap_or_else(|e| panic!("HANGAR_TEST_DATABASE=postgres, but: {e}"))
            .fresh_database()
    })
}

/// An HTTP answer: status and parsed JSON body (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Res {
    pub status: u16,
    pub body: Value,
}

impl Res {
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

/// Address pools of their own for each test server, so servers running side by side
/// never hand out the same app address: a /30 of 127.0.0.0/8 and a /64, both derived
/// from the server's (unique) HTTP port.
pub fn pools(http_port: u16) -> [String; 4] {
    let p = u32::from(http_port);
    let v4 = format!(
        "127.{}.{}.{}/30",
        200 + (p >> 14),
        (p >> 6) & 0xff,
        (p & 0x3f) * 4
    );
    [
        "--ip-pool-v4".into(),
        v4,
        "--ip-pool-v6".into(),
        format!("fd68:616e:6761:{p:x}::/64"),
    ]
}

/// The first dedicated IPv4 address a test server hands out.
pub fn first_v4(http_port: u16) -> String {
    let p = u32::from(http_port);
    format!(
        "127.{}.{}.{}",
        200 + (p >> 14),
        (p >> 6) & 0xff,
        (p & 0x3f) * 4 + 1
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl TestServer {
    /// A server with the process driver.
    pub async fn start() -> TestServer {
        Self::start_with(&["--driver", "process"]).await
    }

    /// A server with extra `hangar server` arguments.
    pub async fn start_with(args: &[&str]) -> TestServer {
        Self::start_with_env(args, &[]).await
    }

    /// A server with extra arguments and environment variables.
    pub async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> TestServer {
        Self::start_on(args, env, test_database()).await
    }

    /// A server on the given PostgreSQL database (`None`: SQLite in its data dir).
    pub async fn start_on(
        args: &[&str],
        env: &[(&str, &str)],
        database: Option<String>,
    ) -> TestServer {
        TestServer::unstarted(args, env, database).started().await
    }

    /// A server with its agent embedded, whatever the run's mode (for tests
    /// of the control plane alone, such as a standby taking over its machines).
    pub async fn start_embedded_on(
        args: &[&str],
        env: &[(&str, &str)],
        database: Option<String>,
    ) -> TestServer {
        let mut s = TestServer::unstarted(args, env, database);
        s.apart = false;
        s.started().await
    }

    async fn started(self) -> TestServer {
        let mut s = self;
        // A port picked free may be taken by someone else before the server binds it:
        // then the server says so and exits, and it gets other ports.
        for _ in 0..5 {
            match s.try_spawn().await {
                Ok(()) => break,
                Err(log) if log.contains("Address already in use") => {
                    s.port = free_port();
                    s.agent_port = free_port();
                    s.http_port = free_port();
                    s.https_port = free_port();
                    s.registry_port = free_port();
                }
                Err(log) => panic!("server did not come up: {log}"),
            }
        }
        assert!(s.child.is_some(), "server did not come up: {}", s.log());
        s.token = std::fs::read_to_string(s.data_dir().join("admin-token"))
            .expect("admin token file")
            .trim()
            .to_string();
        s
    }

    /// A control plane (`--remote-agent`) and its agent in a process of its own,
    /// whatever the run's mode.
    pub async fn start_apart(args: &[&str]) -> TestServer {
        let mut s = TestServer::unstarted(args, &[], test_database());
        s.apart = true;
        s.spawn().await;
        s.token = std::fs::read_to_string(s.data_dir().join("admin-token"))
            .expect("admin token file")
            .trim()
            .to_string();
        s
    }

    /// A server in a temp dir of its own, not started yet.
    pub fn unstarted(args: &[&str], env: &[(&str, &str)], database: Option<String>) -> TestServer {
        TestServer {
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            http_port: free_port(),
            https_port: free_port(),
            registry_port: free_port(),
            token: String::new(),
            child: None,
            agent: None,
            agent_port: free_port(),
            apart: agent_apart(),
            http: reqwest::Client::new(),
            server_args: args.iter().map(|a| a.to_string()).collect(),
            server_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            database,
        }
    }

    /// A second control plane on `primary`'s PostgreSQL database, with its own data
    /// dir and ports, started but not waited for (it stands by while `primary` leads).
    pub fn standby_of(primary: &TestServer) -> TestServer {
        let args: Vec<&str> = primary.server_args.iter().map(String::as_str).collect();
        let mut s = TestServer::unstarted(&args, &[], primary.database.clone());
        s.apart = primary.apart;
        s.token = primary.token.clone();
        s.launch();
        s
    }

    /// Waits until the server answers `/healthz`; false after `secs` or if it exited.
    pub async fn answers_within(&mut self, secs: u64) -> bool {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            if let Ok(r) = self
                .http
                .get(format!("{}/healthz", self.url()))
                .send()
                .await
            {
                if r.status().is_success() {
                    return true;
                }
            }
            if self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some())
            {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts) the server process and waits until it answers.
    pub async fn spawn(&mut self) {
        if let Err(log) = self.try_spawn().await {
            panic!("server did not come up: {log}");
        }
    }

    /// Starts the server process and waits until it answers; its log if it exits or
    /// does not answer within 20 s.
    async fn try_spawn(&mut self) -> Result<(), String> {
        self.launch();
        if self.answers_within(20).await && self.agent_listens_within(20).await {
            return Ok(());
        }
        self.kill9();
        Err(self.log())
    }

    /// With the agent apart: whether its process listens (and still runs a moment
    /// later: one whose port was taken exits at once, saying so in the log).
    async fn agent_listens_within(&mut self, secs: u64) -> bool {
        let until = Instant::now() + Duration::from_secs(secs);
        let addr = format!("127.0.0.1:{}", self.agent_port);
        loop {
            let Some(agent) = self.agent.as_mut() else {
                return true;
            };
            if agent.try_wait().ok().flatten().is_some() || Instant::now() > until {
                return false;
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return self
                    .agent
                    .as_mut()
                    .is_some_and(|a| a.try_wait().ok().flatten().is_none());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("server log")
    }

    /// Starts the server process (and, with the agent apart, the agent's, unless it
    /// runs) without waiting for it.
    pub fn launch(&mut self) {
        let (server_args, agent_args) = if self.apart {
            let (mut s, a) = split_args(&self.server_args);
            s.push("--remote-agent".into());
            (s, Some(a))
        } else {
            (self.server_args.clone(), None)
        };
        let log = self.log_file();
        let child = Command::new(HANGAR)
            .args(["server", "--data-dir"])
            .arg(self.data_dir())
            .args([
                "--api-listen",
                &format!("127.0.0.1:{}", self.port),
                "--region",
                "ord",
                "--http-listen",
                &format!("127.0.0.1:{}", self.http_port),
                "--https-listen",
                &format!("127.0.0.1:{}", self.https_port),
                "--registry-listen",
                &format!("127.0.0.1:{}", self.registry_port),
            ])
            .args(pools(self.http_port))
            .args(
                self.database
                    .iter()
                    .flat_map(|url| ["--database".to_string(), url.clone()]),
            )
            .envs(
                self.database
                    .iter()
                    .map(|_| ("HANGAR_MASTER_KEY", TEST_MASTER_KEY)),
            )
            .args(&server_args)
            .envs(self.server_env.iter().map(|(k, v)| (k, v)))
            .env("HANGAR_AGENT_TOKEN", TEST_AGENT_TOKEN)
            .env("HANGAR_CONFIG", self.dir.path().join("cli.toml"))
            .env(
                "HANGAR_LOG",
                std::env::var("HANGAR_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn hangar server");
        self.child = Some(child);
        let agent_running = self
            .agent
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none());
        if let (Some(args), false) = (agent_args, agent_running) {
            self.launch_agent(&args);
        }
    }

    /// SIGKILL to the control plane alone (the agent's process, when apart, goes on).
    pub fn kill9_control_plane(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server process's exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL, as a crash would (of the agent's process too, when apart).
    pub fn kill9(&mut self) {
        self.kill9_control_plane();
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("send SIGTERM");
        let status = c.wait().expect("wait for server");
        if let Some(mut a) = self.agent.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(a.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = a.wait();
        }
        status
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Res {
        self.call_with(method, path, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Res {
        let mut req = self
            .http
            .request(
                method.parse().expect("method"),
                format!("{}/v1{}", self.url(), path),
            )
            .bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        Res {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    pub async fn raw(&self, method: &str, path: &str, body: &str, auth: Option<&str>) -> Res {
        let mut req = self
            .http
            .request(
                method.parse().expect("method"),
                format!("{}/v1{}", self.url(), path),
            )
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        Res {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    pub async fn create_app(&self, name: &str) {
        let r = self
            .call(
                "POST",
                "/apps",
                Some(json!({"app_name": name, "org_slug": "personal"})),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
    }

    /// Creates a machine running `sh -c script` and returns its JSON.
    pub async fn create_machine(&self, app: &str, script: &str, extra: Value) -> Value {
        let mut config = json!({"image": "busybox", "init": {"exec": ["/bin/sh", "-c", script]}});
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        let r = self
            .call(
                "POST",
                &format!("/apps/{app}/machines"),
                Some(json!({"config": config})),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        r.body
    }

    /// Waits (through the API's own wait) for a machine state.
    pub async fn wait_state(&self, app: &str, id: &str, state: &str) -> Res {
        let r = self
            .call(
                "GET",
                &format!("/apps/{app}/machines/{id}/wait?state={state}&timeout=30"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "waiting for {state}: {r:?}\n{}", self.log());
        r
    }

    pub async fn machine(&self, app: &str, id: &str) -> Value {
        self.call("GET", &format!("/apps/{app}/machines/{id}"), None)
            .await
            .body
    }

    pub async fn exec(&self, app: &str, id: &str, cmd: &[&str]) -> Value {
        let r = self
            .call(
                "POST",
                &format!("/apps/{app}/machines/{id}/exec"),
                Some(json!({"command": cmd})),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        r.body
    }

    /// The main process's PID, from `ps`.
    pub async fn main_pid(&self, app: &str, id: &str) -> i64 {
        let r = self
            .call("GET", &format!("/apps/{app}/machines/{id}/ps"), None)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        r.body[0]["pid"].as_i64().expect("pid")
    }

    pub async fn events(&self, app: &str, id: &str) -> Vec<Value> {
        let r = self
            .call(
                "GET",
                &format!("/apps/{app}/machines/{id}/events?limit=50"),
                None,
            )
            .await;
        r.body.as_array().cloned().unwrap_or_default()
    }

    /// A GET through the edge proxy with `host` and extra headers: status and body.
    pub async fn proxy_get(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut req = self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.http_port))
            .header("host", host)
            .timeout(Duration::from_secs(60));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("request through the proxy");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_in(Path::new("."), args)
    }

    /// Runs the CLI against this server from the directory `dir`.
    pub fn cli_in(&self, dir: &Path, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        cmd.current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("run hangar")
    }

    /// The CLI against this server, to adjust before it runs.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(HANGAR);
        cmd.args(args)
            .env("HANGAR_API_URL", self.url())
            .env("HANGAR_API_TOKEN", &self.token)
            .env("HANGAR_CONFIG", self.dir.path().join("cli.toml"))
            .env_remove("FLY_API_TOKEN")
            .env_remove("HANGAR_APP");
        cmd
    }

    /// Ends every machine process this server's data dir holds; machines outlive the
    /// server by design, tests must not leave them behind.
    fn kill_machines(&self) {
        hangar_testkit::cleanup(&self.data_dir());
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            // What the server (and agent) said is the first thing a failure needs.
            let log = std::fs::read_to_string(self.dir.path().join("server.log"));
            let log = log.unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("--- last lines of the server log ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        self.kill_machines();
        // The server routes its IPv6 pool to lo as root; a killed server leaves it.
        let v6 = &pools(self.http_port)[3];
        let _ = Command::new("ip")
            .args(["-6", "route", "del", "local", v6, "dev", "lo"])
            .stderr(Stdio::null())
            .status();
    }
}
