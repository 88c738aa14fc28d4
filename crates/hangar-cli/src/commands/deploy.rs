//! `hangar deploy`: read fly.toml, build the image on the server (or take `--image`),
//! start the deploy on the server and follow it. The deploy itself runs on the server,
//! so closing this command (or `--detach`) never leaves half a deploy.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use hangar_types::deploy::DeployRequest;
use hangar_types::GoDuration;

use super::appconfig::app_name;
use super::{build, progress, AppArg};
use crate::config;

#[derive(Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub app: AppArg,
    /// Deploy this image instead of building one
    #[arg(short = 'i', long)]
    pub image: Option<String>,
    /// rolling, immediate, canary or bluegreen
    #[arg(long)]
    pub strategy: Option<String>,
    /// How long each machine may take to start and pass its checks (seconds or a duration)
    #[arg(long, value_parser = parse_duration)]
    pub wait_timeout: Option<Duration>,
    /// Machines updated at once: a fraction (0.33) or a number (2)
    #[arg(long)]
    pub max_unavailable: Option<f64>,
    /// How long the release command may run (seconds, a duration, or "none")
    #[arg(long, value_parser = parse_duration)]
    pub release_command_timeout: Option<Duration>,
    /// Create a second machine for new process groups with services
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ha: bool,
    /// Do not run [deploy] release_command
    #[arg(long)]
    pub skip_release_command: bool,
    /// Start the deploy and return without following it
    #[arg(long)]
    pub detach: bool,
    /// Set an environment variable: KEY=VALUE (repeatable)
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Region for new machines and the release command (over primary_region)
    #[arg(long)]
    pub primary_region: Option<String>,
    #[command(flatten)]
    pub build: build::BuildArgs,
    /// Build and push the image, but do not deploy it
    #[arg(long)]
    pub build_only: bool,
    /// Accepted for flyctl compatibility: the deploy does not ask anything
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Accepted for flyctl compatibility: builds always run on the server
    #[arg(long, hide = true)]
    pub remote_only: bool,
    /// Accepted for flyctl compatibility: builds always run on the server
    #[arg(long, hide = true)]
    pub local_only: bool,
    /// Give the app a private (Flycast) address if it has none, so other apps of the
    /// org reach it as <app>.flycast through the proxy
    #[arg(long)]
    pub flycast: bool,
}

/// A number of seconds, a duration (`90s`, `5m`), or `none` (no limit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "none" {
        return Ok(Duration::ZERO);
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    GoDuration::parse(t).map(|d| d.0).map_err(|e| e.to_string())
}

pub fn parse_env(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("invalid --env {p:?}: use KEY=VALUE"),
        })
        .collect()
}

/// Allocates the app a Flycast address unless it holds one.
pub(super) async fn ensure_flycast(client: &hangar_client::Client, app: &str) -> Result<()> {
    let held = client.list_ips(app).await?;
    if let Some(ip) = held.ips.iter().find(|i| i.kind == "private_v6") {
        println!("Flycast address {} ({app}.flycast)", ip.ip);
        return Ok(());
    }
    let req = hangar_types::edge::AllocateIpRequest {
        kind: "private_v6".into(),
        ..Default::default()
    };
    let ip = client.allocate_ip(app, &req).await?;
    println!("Allocated Flycast address {} ({app}.flycast)", ip.ip);
    Ok(())
}

pub async fn run(args: DeployArgs) -> Result<()> {
    let config_arg = &args.app.config;
    let loaded = config_arg.load().with_context(|| {
        format!(
            "read {} (run `hangar launch` to make one)",
            config_arg.path().display()
        )
    })?;
    let app = app_name(&args.app, Some(&loaded.config))?;
    let client = config::client()?;
    client.get_app(&app).await.map_err(|e| {
        anyhow::anyhow!("{e}; create the app with `hangar apps create {app}` or `hangar launch`")
    })?;
    if args.flycast {
        ensure_flycast(&client, &app).await?;
    }
    let dir = loaded
        .path
        .as_deref()
        .map_or_else(|| ".".into(), super::appconfig::dir_of);
    let image = match args
        .image
        .clone()
        .or_else(|| loaded.config.build.as_ref().and_then(|b| b.image.clone()))
    {
        Some(i) => i,
        None => build::build(&client, &app, &dir, &loaded.config, &args.build).await?,
    };
    if args.build_only {
        println!("image: {image}");
        return Ok(());
    }
    let mut config = loaded.config.clone();
    // `-a` wins over the file's app, as in flyctl.
    config.app = app.clone();
    // [[files]] local_path and a machine_config file are read here, where they are.
    config
        .inline_local_files(&dir)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let req = DeployRequest {
        config: Some(serde_json::to_value(&config)?),
        image: Some(image),
        strategy: args.strategy.clone(),
        max_unavailable: args.max_unavailable,
        wait_timeout: args.wait_timeout.map(GoDuration),
        release_command_timeout: args.release_command_timeout.map(GoDuration),
        ha: Some(args.ha),
        skip_release_command: args.skip_release_command,
        primary_region: args.primary_region.clone(),
        env: parse_env(&args.env)?,
        restart_only: false,
        description: None,
    };
    let release = client.deploy(&app, &req).await?;
    println!(
        "==> Release v{} created ({})",
        release.version,
        release.strategy.to_lowercase()
    );
    if args.detach {
        println!(
            "The deploy runs on the server; follow it with `hangar releases -a {app}` or `hangar status -a {app}`"
        );
        return Ok(());
    }
    progress::follow(&client, &app, &release).await
}
