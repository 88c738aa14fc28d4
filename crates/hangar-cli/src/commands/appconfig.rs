//! `hangar config validate|show|save` and the `-c/--config` flag every fly.toml-reading
//! command shares: finding the file, reading it, printing its warnings and errors with
//! key, line and column.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hangar_appconfig::{AppConfig, Diagnostic, Loaded};

use super::AppArg;
use crate::{config, output};

/// `-c/--config PATH`: a fly.toml, or a directory holding one.
#[derive(Args, Clone)]
pub struct ConfigArg {
    /// Path to the app's config (a file, or a directory holding fly.toml)
    #[arg(short = 'c', long = "config", default_value = ".")]
    pub config: PathBuf,
}

impl Default for ConfigArg {
    fn default() -> Self {
        ConfigArg {
            config: PathBuf::from("."),
        }
    }
}

impl ConfigArg {
    pub fn path(&self) -> PathBuf {
        hangar_appconfig::resolve(&self.config)
    }

    /// Whether there is a config file to read.
    pub fn exists(&self) -> bool {
        self.path().is_file()
    }

    /// Reads the config and prints its warnings; an error listing every problem when it
    /// is not valid.
    pub fn load(&self) -> Result<Loaded> {
        load(&self.path(), false)
    }
}

/// Reads and checks a config; `strict` makes unknown keys errors.
pub fn load(path: &Path, strict: bool) -> Result<Loaded> {
    let loaded =
        hangar_appconfig::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let (errors, warnings) = diagnostics(&loaded, strict);
    for w in &warnings {
        eprintln!("WARN {}: {w}", path.display());
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("✘ {}: {e}", path.display());
        }
        bail!(
            "App configuration is not valid: {} problem(s) in {}",
            errors.len(),
            path.display()
        );
    }
    Ok(loaded)
}

/// Errors and warnings, placed at their line and column.
fn diagnostics(loaded: &Loaded, strict: bool) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    let mut all = loaded.place(loaded.config.validate());
    for u in &loaded.unknown_keys {
        let mut u = u.clone();
        if strict {
            u.severity = hangar_appconfig::Severity::Error;
        }
        all.push(u);
    }
    all.into_iter().partition(Diagnostic::is_error)
}

/// The directory holding `path` (`.` for a bare file name).
pub fn dir_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The app a command acts on: `-a`, else the config's `app`.
pub fn app_name(app: &AppArg, config: Option<&AppConfig>) -> Result<String> {
    if let Some(name) = app.given() {
        return Ok(name);
    }
    match config.map(|c| c.app.clone()).filter(|a| !a.is_empty()) {
        Some(a) => Ok(a),
        None => bail!(
            "no app given: pass -a APP, or set app = \"...\" in {}",
            app.config.path().display()
        ),
    }
}

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Check fly.toml: errors and warnings with their line and column
    Validate {
        #[command(flatten)]
        config: ConfigArg,
        /// Unknown keys are errors, not warnings
        #[arg(long)]
        strict: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show the app's config as JSON: the current release's, or the local file's with --local
    Show {
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        local: bool,
    },
    /// Write the current release's config to fly.toml
    Save {
        #[command(flatten)]
        app: AppArg,
        /// Overwrite an existing file without asking
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

pub async fn run(cmd: ConfigCmd) -> Result<()> {
    match cmd {
        ConfigCmd::Validate {
            config,
            strict,
            json,
        } => {
            let path = config.path();
            if json {
                let loaded = hangar_appconfig::load(&path);
                let (errors, warnings) = match &loaded {
                    Ok(l) => diagnostics(l, strict),
                    Err(hangar_appconfig::LoadError::Invalid(d)) => (vec![d.clone()], Vec::new()),
                    Err(e) => (vec![Diagnostic::error(e.to_string())], Vec::new()),
                };
                output::json(&serde_json::json!({
                    "path": path, "valid": errors.is_empty(), "errors": errors, "warnings": warnings,
                }))?;
                if !errors.is_empty() {
                    bail!("App configuration is not valid");
                }
                return Ok(());
            }
            println!("Validating {}", path.display());
            load(&path, strict)?;
            println!("✓ Configuration is valid");
        }
        ConfigCmd::Show { app, local } => {
            let config = &app.config;
            if local || (app.given().is_none() && config.exists()) {
                return output::json(&config.load()?.config);
            }
            let loaded = config.exists().then(|| config.load()).transpose()?;
            let name = app_name(&app, loaded.as_ref().map(|l| &l.config))?;
            let release = config::client()?
                .release(&name, "current")
                .await
                .with_context(|| format!("app {name} has no deployed release to show"))?;
            output::json(&release.config)?;
        }
        ConfigCmd::Save { app, yes } => {
            let path = app.config.path();
            let local = path
                .is_file()
                .then(|| hangar_appconfig::load(&path).ok())
                .flatten();
            let name = app_name(&app, local.as_ref().map(|l| &l.config))?;
            let release = config::client()?
                .release(&name, "current")
                .await
                .with_context(|| format!("app {name} has no deployed release to save"))?;
            let loaded = hangar_appconfig::from_value(release.config)
                .map_err(|e| anyhow::anyhow!("the release's config: {e}"))?;
            if path.exists() {
                super::confirm(&format!("Overwrite {}?", path.display()), yes)?;
            }
            let text = loaded
                .config
                .to_toml(&now_rfc3339())
                .map_err(|e| anyhow::anyhow!(e))?;
            std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
            println!("Wrote config file {}", path.display());
        }
    }
    Ok(())
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
