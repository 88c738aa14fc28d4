//! Following a deploy on the server: its progress events as lines, with a progress bar
//! per process group on a terminal. What a deploy does is the server's; this only shows
//! it.

use std::collections::HashMap;
use std::io::IsTerminal;

use anyhow::{bail, Result};
use hangar_client::Client;
use hangar_types::deploy::{DeployEvent, Release};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Shows the deploy of `release` until it ends; an error when it failed.
pub async fn follow(client: &Client, app: &str, release: &Release) -> Result<()> {
    let bars = std::io::stderr().is_terminal().then(MultiProgress::new);
    let mut by_group: HashMap<String, ProgressBar> = HashMap::new();
    let print = |bars: &Option<MultiProgress>, line: String| match bars {
        Some(b) => {
            let _ = b.println(line);
        }
        None => println!("{line}"),
    };
    let last = client
        .follow_deploy(app, &release.id, |e: &DeployEvent| match e.kind.as_str() {
            "step" => print(&bars, format!("==> {}", e.message)),
            "warning" => print(&bars, format!("WARNING {}", e.message)),
            "log" => print(&bars, format!("  | {}", e.message)),
            "machine" => print(
                &bars,
                format!(
                    "  machine {} [{}] {}",
                    e.machine_id.as_deref().unwrap_or("?"),
                    e.group.as_deref().unwrap_or("?"),
                    e.message
                ),
            ),
            "progress" => {
                let (Some(done), Some(total)) = (e.done, e.total) else {
                    return;
                };
                match &bars {
                    Some(b) => {
                        let group = e.group.clone().unwrap_or_default();
                        let bar = by_group.entry(group.clone()).or_insert_with(|| {
                            let bar = b.add(ProgressBar::new(total as u64));
                            if let Ok(style) =
                                ProgressStyle::with_template("  [{bar:30}] {pos}/{len} {msg}")
                            {
                                bar.set_style(style.progress_chars("=> "));
                            }
                            bar.set_message(format!("'{group}' machines updated"));
                            bar
                        });
                        bar.set_position(done as u64);
                    }
                    None => println!("  {}", e.message),
                }
            }
            _ => {}
        })
        .await?;
    for bar in by_group.values() {
        bar.finish();
    }
    if last.kind == "complete" {
        println!("{}", last.message);
        Ok(())
    } else {
        bail!("deploy failed: {}", last.message)
    }
}
