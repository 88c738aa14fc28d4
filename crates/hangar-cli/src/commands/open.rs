//! `hangar open [PATH]`: the app's URL through the edge proxy, opened in a browser when
//! this machine has one to show it (`$BROWSER`, or `xdg-open` with a display), else
//! printed for the user to follow.

use std::process::{Command, Stdio};

use anyhow::Result;
use clap::Args;

use super::AppArg;
use crate::config;

#[derive(Args)]
pub struct OpenArgs {
    /// Path to open, e.g. /admin
    pub path: Option<String>,
    #[command(flatten)]
    pub app: AppArg,
}

/// The browser command to use, when there is one.
fn browser() -> Option<String> {
    if let Some(b) = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty())
    {
        return Some(b);
    }
    let display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()));
    let xdg = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("xdg-open").is_file()));
    (display && xdg).then(|| "xdg-open".to_string())
}

pub async fn run(args: OpenArgs) -> Result<()> {
    let app = args.app.name()?;
    let info = config::client()?.get_app(&app).await?;
    let base = info.app_url.unwrap_or_else(|| format!("https://{app}"));
    let path = args.path.unwrap_or_default();
    let url = if path.is_empty() || path.starts_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    };
    println!("opening {url} ...");
    if let Some(cmd) = browser() {
        let spawned = Command::new(&cmd)
            .arg(&url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            eprintln!("could not start the browser {cmd:?} ({e}); open the URL yourself");
        }
    }
    Ok(())
}
