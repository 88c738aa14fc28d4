//! `hangar agent --control URL`: this host's agent in a process of its own — its
//! machines, its store, the host's edge proxy — for a control plane started with
//! `hangar server --remote-agent` (on this host or another). Flags, driver choice and
//! the lines it prints; the agent itself is `hangar_agent::standalone`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use hangar_agent::standalone::{AgentConfig, StandaloneAgent};
use hangar_server::CancellationToken;
use tracing::info;

use super::server::{
    agent_token, choose_driver, go_duration, init_tracing, region_code, wait_for_signal,
    DriverArgs, SHORTEST,
};
use crate::config;

#[derive(Args)]
pub struct AgentArgs {
    /// The control plane's API URL (a server started with --remote-agent)
    #[arg(long, env = "HANGAR_CONTROL_URL")]
    pub control: String,
    /// Where the agent's interface listens for the control plane
    #[arg(long, env = "HANGAR_AGENT_LISTEN", default_value = "127.0.0.1:4281")]
    pub listen: SocketAddr,
    /// Where this host's machines, their store and logs live
    /// [default: $XDG_DATA_HOME/hangar]
    #[arg(long, env = "HANGAR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The region this host is in
    #[arg(long, env = "HANGAR_REGION", default_value = "local")]
    pub region: String,
    /// Where this host's edge proxy takes HTTP for apps
    #[arg(long, env = "HANGAR_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    /// Where this host's edge proxy takes HTTPS for apps
    #[arg(long, env = "HANGAR_HTTPS_LISTEN", default_value = "127.0.0.1:8443")]
    pub https_listen: SocketAddr,
    /// Apps are reached at <app>.<app-domain>
    #[arg(long, env = "HANGAR_APP_DOMAIN", default_value = "localhost")]
    pub app_domain: String,
    /// How often autostop looks for idle machines (a Go duration)
    #[arg(long, env = "HANGAR_AUTOSTOP_INTERVAL", default_value = "5m")]
    pub autostop_interval: String,
    /// How long a machine may take to begin answering a proxied request (a Go duration)
    #[arg(long, env = "HANGAR_PROXY_RESPONSE_TIMEOUT", default_value = "60s")]
    pub proxy_response_timeout: String,
    /// How long a request may queue while every machine of its app is at its hard limit
    /// (a Go duration)
    #[arg(long, env = "HANGAR_PROXY_QUEUE_TIMEOUT", default_value = "30s")]
    pub proxy_queue_timeout: String,
    #[command(flatten)]
    pub machines: DriverArgs,
}

pub async fn run(args: AgentArgs) -> Result<()> {
    init_tracing();
    let region = region_code(&args.region)?;
    let control = args.control.trim().trim_end_matches('/').to_string();
    if !(control.starts_with("http://") || control.starts_with("https://")) {
        bail!("invalid --control {control:?}: give the control plane's API URL, such as http://127.0.0.1:4280");
    }
    let token = agent_token()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(config::default_data_dir);
    let driver = choose_driver(&args.machines, &data_dir).await?;
    let config = AgentConfig {
        data_dir: data_dir.clone(),
        listen: args.listen,
        control_url: control.clone(),
        token,
        region: region.clone(),
        http_listen: args.http_listen,
        https_listen: args.https_listen,
        app_domain: args.app_domain.trim_matches('.').to_ascii_lowercase(),
        autostop_interval: go_duration("autostop-interval", &args.autostop_interval)?.max(SHORTEST),
        proxy_response_timeout: go_duration(
            "proxy-response-timeout",
            &args.proxy_response_timeout,
        )?
        .max(SHORTEST),
        proxy_queue_timeout: go_duration("proxy-queue-timeout", &args.proxy_queue_timeout)?,
        volumes: args.machines.volume_settings()?,
        dns: args.machines.dns_settings(),
        wireguard: args.machines.gateway_settings(&data_dir),
    };
    let agent = StandaloneAgent::start(config, driver)
        .await
        .context("start hangar agent")?;
    info!(listen = %agent.listen_addr, control = %control, data_dir = %data_dir.display(), region = %region, "hangar agent listening");
    println!(
        "Hangar agent listening on http://{} for {control}",
        agent.listen_addr
    );
    println!(
        "Apps are served at http://<app>.{domain}:{} and https://<app>.{domain}:{}",
        agent.http_addr.port(),
        agent.https_addr.port(),
        domain = args.app_domain.trim_matches('.'),
    );
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested; leaving machines running");
        trigger.cancel();
    });
    agent.serve(shutdown).await?;
    info!("hangar agent stopped");
    Ok(())
}
