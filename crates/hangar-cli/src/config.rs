//! The CLI's config file (`$XDG_CONFIG_HOME/hangar/config.toml`, or `$HANGAR_CONFIG`)
//! and how the API URL and token are chosen: environment first, then the file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:4280";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CliConfig {
    pub api_url: Option<String>,
    pub access_token: Option<String>,
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

pub fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("HANGAR_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home().join(".config"));
    base.join("hangar").join("config.toml")
}

/// `$XDG_DATA_HOME/hangar`, else `~/.local/share/hangar`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home().join(".local").join("share"))
        .join("hangar")
}

pub fn load() -> Result<CliConfig> {
    let path = config_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            toml::from_str(&text).with_context(|| format!("read CLI config {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CliConfig::default()),
        Err(e) => Err(e).with_context(|| format!("read CLI config {}", path.display())),
    }
}

/// Writes the config (mode 0600) unless one exists; returns its path when written.
pub fn write_if_absent(cfg: &CliConfig) -> Result<Option<PathBuf>> {
    let path = config_path();
    if path.exists() {
        return Ok(None);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let text = toml::to_string(cfg).context("encode CLI config")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("write CLI config {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(Some(path))
}

/// Writes the config (mode 0600), replacing the file whole: a new file beside it,
/// renamed over it, so a crash leaves either the old config or the new one.
pub fn save(cfg: &CliConfig) -> Result<PathBuf> {
    let path = config_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let text = toml::to_string(cfg).context("encode CLI config")?;
    let tmp = path.with_extension("toml.new");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("write CLI config {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write CLI config {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("write CLI config {}", path.display()))?;
    Ok(path)
}

/// The API URL a client command uses: `HANGAR_API_URL`, else the config's.
pub fn api_url(cfg: &CliConfig) -> String {
    env("HANGAR_API_URL")
        .or_else(|| cfg.api_url.clone())
        .unwrap_or_else(|| DEFAULT_API_URL.to_string())
}

/// The token a client command uses, and where it came from.
pub fn token(cfg: &CliConfig) -> Option<(String, &'static str)> {
    env("HANGAR_API_TOKEN")
        .map(|t| (t, "HANGAR_API_TOKEN"))
        .or_else(|| env("FLY_API_TOKEN").map(|t| (t, "FLY_API_TOKEN")))
        .or_else(|| cfg.access_token.clone().map(|t| (t, "the CLI config")))
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// The API URL and token a client command uses.
pub fn client() -> Result<hangar_client::Client> {
    let cfg = load()?;
    let url = api_url(&cfg);
    let (token, _) = token(&cfg).context(
        "no API token: run `hangar auth login`, set HANGAR_API_TOKEN, or start `hangar server` once to write the CLI config",
    )?;
    Ok(hangar_client::Client::new(&url, &token))
}
