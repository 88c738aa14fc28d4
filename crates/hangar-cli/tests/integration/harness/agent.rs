//! The agent in a process of its own, for the harness: which `hangar server` flags are
//! the agent's, and starting `hangar agent` beside a test control plane.

use std::process::{Command, Stdio};

use super::{TestServer, HANGAR};

/// Whether this run's servers have their agent in a process of its own
/// (`HANGAR_TEST_AGENT=process`: `hangar server --remote-agent` and `hangar agent`).
pub fn agent_apart() -> bool {
    std::env::var("HANGAR_TEST_AGENT").is_ok_and(|v| v == "process")
}

/// The token test control planes and their agents share.
pub(super) const TEST_AGENT_TOKEN: &str = "test-agent-token-0123456789abcdef";

/// `hangar server` flags that say how machines or the proxy run: with the agent
/// apart they are the agent's (each takes a value).
const AGENT_FLAGS: &[&str] = &[
    "--driver",
    "--containerd-socket",
    "--insecure-registry",
    "--autostop-interval",
    "--proxy-response-timeout",
    "--proxy-queue-timeout",
    "--volume-overcommit",
    "--dns-upstream",
    "--volume-encryption",
    "--snapshot-bucket",
    "--snapshot-endpoint",
    "--snapshot-region",
    "--wireguard-port",
    "--wireguard-interface",
];

/// Flags both take.
const SHARED_FLAGS: &[&str] = &["--app-domain"];

/// Splits `hangar server` arguments into the server's and the agent's.
pub(super) fn split_args(args: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut server, mut agent) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].split('=').next().unwrap_or("");
        let with_value = !args[i].contains('=') && i + 1 < args.len();
        let pair: Vec<String> =
            if with_value && flag.starts_with("--") && !args[i + 1].starts_with("--") {
                args[i..i + 2].to_vec()
            } else {
                vec![args[i].clone()]
            };
        i += pair.len();
        if AGENT_FLAGS.contains(&flag) {
            agent.extend(pair);
        } else if SHARED_FLAGS.contains(&flag) {
            agent.extend(pair.clone());
            server.extend(pair);
        } else {
            server.extend(pair);
        }
    }
    (server, agent)
}

impl TestServer {
    /// Starts `hangar agent` for this server, on the same data dir (its store and its
    /// machines live there as the embedded agent's do).
    pub(super) fn launch_agent(&mut self, args: &[String]) {
        let log = self.log_file();
        let child = Command::new(HANGAR)
            .args(["agent", "--data-dir"])
            .arg(self.data_dir())
            .args([
                "--control",
                &self.url(),
                "--listen",
                &format!("127.0.0.1:{}", self.agent_port),
                "--region",
                "ord",
                "--http-listen",
                &format!("127.0.0.1:{}", self.http_port),
                "--https-listen",
                &format!("127.0.0.1:{}", self.https_port),
            ])
            .args(args)
            .envs(self.server_env.iter().map(|(k, v)| (k, v)))
            .env("HANGAR_AGENT_TOKEN", TEST_AGENT_TOKEN)
            .env(
                "HANGAR_LOG",
                std::env::var("HANGAR_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn hangar agent");
        self.agent = Some(child);
    }
}
