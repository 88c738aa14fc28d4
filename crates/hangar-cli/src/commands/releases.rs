//! `hangar releases [--image] [--json]` and `hangar releases rollback [VERSION]`, which
//! deploys a new release carrying that version's image, config and secrets together.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use hangar_types::deploy::{ReleaseStatus, RollbackRequest};
use hangar_types::GoDuration;

use super::deploy::parse_duration;
use super::{confirm, progress, AppArg};
use crate::{config, output};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReleasesArgs {
    #[command(subcommand)]
    pub command: Option<ReleasesCmd>,
    #[command(flatten)]
    pub app: AppArg,
    /// Show each release's image
    #[arg(long)]
    pub image: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum ReleasesCmd {
    /// Deploy an earlier release again: its image, config and secrets
    Rollback {
        #[command(flatten)]
        app: AppArg,
        /// The version to return to (`3` or `v3`); the one before the current by default
        version: Option<String>,
        #[arg(long)]
        strategy: Option<String>,
        #[arg(long, value_parser = parse_duration)]
        wait_timeout: Option<std::time::Duration>,
        #[arg(long)]
        detach: bool,
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

pub async fn run(args: ReleasesArgs) -> Result<()> {
    let client = config::client()?;
    match args.command {
        None => {
            let app = args.app.name()?;
            let list = client.releases(&app, 25).await?;
            if args.json {
                return output::json(&list.releases);
            }
            let mut headers = vec!["VERSION", "STATUS", "DESCRIPTION", "USER", "DATE"];
            if args.image {
                headers.push("DOCKER IMAGE");
            }
            let rows: Vec<Vec<String>> = list
                .releases
                .iter()
                .map(|r| {
                    let mut row = vec![
                        format!("v{}", r.version),
                        r.status.to_string(),
                        r.description.clone(),
                        r.user.clone(),
                        r.created_at.clone(),
                    ];
                    if args.image {
                        row.push(r.image_ref.clone());
                    }
                    row
                })
                .collect();
            output::table(&headers, &rows);
        }
        Some(ReleasesCmd::Rollback {
            app,
            version,
            strategy,
            wait_timeout,
            detach,
            yes,
        }) => {
            let app = app.name()?;
            let target = match version {
                Some(v) => v.trim_start_matches('v').to_string(),
                None => {
                    let list = client.releases(&app, 100).await?;
                    let current = list.releases.iter().find(|r| r.stable).map(|r| r.version);
                    let Some(current) = current else {
                        bail!("app {app} has no complete release to roll back from");
                    };
                    match list
                        .releases
                        .iter()
                        .find(|r| r.version < current && r.status == ReleaseStatus::Complete)
                    {
                        Some(r) => r.version.to_string(),
                        None => bail!(
                            "app {app} has no complete release before v{current} to roll back to"
                        ),
                    }
                }
            };
            confirm(
                &format!("Roll app {app} back to v{target} (its image, config and secrets)?"),
                yes,
            )?;
            let req = RollbackRequest {
                strategy,
                wait_timeout: wait_timeout.map(GoDuration),
            };
            roll_back(&client, &app, &target, &req, detach).await?;
        }
    }
    Ok(())
}

/// Asks for the rollback's release and, unless detached, follows its deploy.
async fn roll_back(
    client: &hangar_client::Client,
    app: &str,
    target: &str,
    req: &RollbackRequest,
    detach: bool,
) -> Result<()> {
    let release = client.rollback(app, target, req).await?;
    println!(
        "==> Release v{} created: rolling back to v{target}",
        release.version
    );
    if detach {
        return Ok(());
    }
    progress::follow(client, app, &release).await
}
