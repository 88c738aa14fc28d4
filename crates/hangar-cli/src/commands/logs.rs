//! `hangar logs -a APP [--machine ID] [--region R] [--no-tail] [--json]`: an app's
//! logs, followed by default like `fly logs`.

use anyhow::Result;
use clap::Args;
use hangar_types::LogEntry;

use super::AppArg;
use crate::config;

#[derive(Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub app: AppArg,
    /// Only this machine's logs
    #[arg(short = 'i', long = "machine", alias = "instance")]
    pub machine: Option<String>,
    /// Only machines in this region
    #[arg(short = 'r', long)]
    pub region: Option<String>,
    /// Print the retained lines and exit instead of following
    #[arg(short = 'n', long)]
    pub no_tail: bool,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
}

fn line(e: &LogEntry) -> String {
    let level = if e.stream == "stderr" {
        "error"
    } else {
        "info"
    };
    format!(
        "{} app[{}] {} [{level}] {}",
        e.timestamp, e.machine, e.region, e.message
    )
}

pub async fn run(args: LogsArgs) -> Result<()> {
    let app = args.app.name()?;
    let client = config::client()?;
    let json = args.json;
    client
        .logs(
            &app,
            args.machine.as_deref(),
            args.region.as_deref(),
            !args.no_tail,
            |e| {
                if json {
                    println!("{}", serde_json::to_string(&e).unwrap_or_default());
                } else {
                    println!("{}", line(&e));
                }
            },
        )
        .await?;
    Ok(())
}
