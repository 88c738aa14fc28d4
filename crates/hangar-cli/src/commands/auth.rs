//! `hangar auth whoami`.

use anyhow::Result;
use clap::Subcommand;

use crate::config;

#[derive(Subcommand)]
pub enum AuthCmd {
    /// Show the identity of the current token
    Whoami {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: AuthCmd) -> Result<()> {
    match cmd {
        AuthCmd::Whoami { json } => {
            let v = config::client()?.whoami().await?;
            if json {
                return crate::output::json(&v);
            }
            let t = &v["tokens"][0];
            println!("{}", t["user"].as_str().unwrap_or("unknown"));
            Ok(())
        }
    }
}
