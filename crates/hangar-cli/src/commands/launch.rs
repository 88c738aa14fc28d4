//! `hangar launch`: in a directory with a Dockerfile, write a fly.toml (the internal
//! port from `EXPOSE`, an `http_service` with HTTPS forced and machines that stop when
//! idle and start on traffic), create the app, and deploy. Running it again in the same
//! directory reuses the fly.toml and the app. It never prompts without a terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use hangar_appconfig::{AppConfig, AutoStop, Build, Compute, HttpService};

use super::appconfig::{now_rfc3339, ConfigArg};
use super::deploy::{self, DeployArgs};
use super::{build, AppArg};
use crate::config;

#[derive(Args)]
pub struct LaunchArgs {
    /// The app's name (default: the directory's name)
    #[arg(long)]
    pub name: Option<String>,
    /// The primary region
    #[arg(short = 'r', long)]
    pub region: Option<String>,
    /// Deploy this image instead of building the Dockerfile
    #[arg(short = 'i', long)]
    pub image: Option<String>,
    /// The directory to launch (default: the current one)
    #[arg(long, default_value = ".")]
    pub path: PathBuf,
    #[arg(short = 'o', long, default_value = "personal")]
    pub org: String,
    /// Deploy now, without asking
    #[arg(long)]
    pub now: bool,
    /// Write fly.toml and create the app, but do not deploy
    #[arg(long)]
    pub no_deploy: bool,
    /// Answer yes to every question
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Create a second machine for high availability
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ha: bool,
    /// Give the app a private (Flycast) address, <app>.flycast
    #[arg(long)]
    pub flycast: bool,
}

/// The first port a Dockerfile `EXPOSE`s, if any.
pub fn exposed_port(dockerfile: &str) -> Option<u16> {
    dockerfile.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        if !words.next()?.eq_ignore_ascii_case("EXPOSE") {
            return None;
        }
        words.next()?.split('/').next()?.parse().ok()
    })
}

/// A name from a directory: lower case letters, digits and dashes.
fn name_from_dir(dir: &Path) -> String {
    let base = std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
        .unwrap_or_else(|| "app".into());
    let mut name: String = base
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name = name.trim_matches('-').to_string();
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name = format!("app-{name}");
    }
    name.chars().take(63).collect()
}

/// The fly.toml `hangar launch` writes.
pub fn generate(name: &str, region: Option<&str>, port: u16, image: Option<&str>) -> AppConfig {
    AppConfig {
        app: name.to_string(),
        primary_region: region.map(str::to_string),
        build: image.map(|i| Build {
            image: Some(i.to_string()),
            ..Default::default()
        }),
        http_service: Some(HttpService {
            internal_port: port,
            force_https: Some(true),
            auto_stop_machines: Some(AutoStop::Stop),
            auto_start_machines: Some(true),
            min_machines_running: Some(0),
            processes: vec!["app".into()],
            ..Default::default()
        }),
        vm: vec![Compute {
            memory: Some("256mb".into()),
            cpu_kind: Some("shared".into()),
            cpus: Some(1),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub async fn run(args: LaunchArgs) -> Result<()> {
    let dir = args.path.clone();
    let toml_path = dir.join("fly.toml");
    let client = config::client()?;
    let name = if toml_path.is_file() {
        let loaded = super::appconfig::load(&toml_path, false)?;
        let name = args
            .name
            .clone()
            .or_else(|| Some(loaded.config.app.clone()).filter(|a| !a.is_empty()))
            .unwrap_or_else(|| name_from_dir(&dir));
        println!("An existing fly.toml was found; launching app {name} from it");
        name
    } else {
        let dockerfile = dir.join("Dockerfile");
        let port = match std::fs::read_to_string(&dockerfile) {
            Ok(text) => exposed_port(&text).unwrap_or(8080),
            Err(_) if args.image.is_some() => 8080,
            Err(_) => bail!(
                "no Dockerfile in {}: add one, or launch a prebuilt image with --image",
                dir.display()
            ),
        };
        let name = args.name.clone().unwrap_or_else(|| name_from_dir(&dir));
        let cfg = generate(&name, args.region.as_deref(), port, args.image.as_deref());
        let text = cfg
            .to_toml(&now_rfc3339())
            .map_err(|e| anyhow::anyhow!(e))?;
        std::fs::write(&toml_path, text)
            .with_context(|| format!("write {}", toml_path.display()))?;
        println!(
            "Wrote config file {} (internal port {port})",
            toml_path.display()
        );
        name
    };
    match client.get_app(&name).await {
        Ok(_) => println!("App {name} exists; using it"),
        Err(e) if e.status().map(|s| s.as_u16()) == Some(404) => {
            client.create_app(&name, &args.org).await?;
            println!("Created app {name} in organization {}", args.org);
        }
        Err(e) => return Err(e.into()),
    }
    if args.flycast {
        deploy::ensure_flycast(&client, &name).await?;
    }
    if args.no_deploy {
        println!("Your app is ready! Deploy with `hangar deploy`");
        return Ok(());
    }
    // Without a terminal nobody can answer: deploy, as flyctl does.
    if !args.now && !args.yes && std::io::stdin().is_terminal() {
        super::confirm("Deploy now?", false)?;
    }
    deploy::run(DeployArgs {
        app: AppArg {
            app: Some(name),
            config: ConfigArg { config: toml_path },
        },
        image: args.image.clone(),
        strategy: None,
        wait_timeout: None,
        max_unavailable: None,
        release_command_timeout: None,
        ha: args.ha,
        skip_release_command: false,
        detach: false,
        env: Vec::new(),
        primary_region: args.region.clone(),
        build: build::BuildArgs::default(),
        build_only: false,
        yes: true,
        remote_only: false,
        local_only: false,
        flycast: false,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_from_expose_and_names_from_dirs() {
        assert_eq!(exposed_port("FROM x\nEXPOSE 3000/tcp\n"), Some(3000));
        assert_eq!(exposed_port("FROM x\n"), None);
        let cfg = generate("my-app", Some("ord"), 3000, None);
        let text = cfg.to_toml("now").expect("writes");
        let back = hangar_appconfig::parse(&text, hangar_appconfig::Format::Toml)
            .expect("parses")
            .config;
        assert_eq!(back, cfg);
        assert!(back.validate().iter().all(|d| !d.is_error()));
        assert!(name_from_dir(Path::new("/")).starts_with("app"));
    }
}
