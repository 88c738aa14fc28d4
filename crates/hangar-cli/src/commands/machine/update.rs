//! `hangar machine update ID`: a new version of one machine's config — image,
//! environment or command changed from flags — confirmed, sent with the version it was
//! made from, and waited for when the machine was running. Whole-app changes are
//! `hangar deploy`'s business, not this one's.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use hangar_client::Client;
use hangar_types::requests::CreateMachineRequest;

use super::{env_pairs, split, wait_for};
use crate::commands::{confirm, AppArg};

#[derive(Args)]
pub struct UpdateArgs {
    id: String,
    #[command(flatten)]
    app: AppArg,
    #[arg(long)]
    image: Option<String>,
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// New command, split like a shell would
    #[arg(long)]
    command: Option<String>,
    #[arg(long)]
    skip_start: bool,
    #[arg(short = 'y', long)]
    yes: bool,
}

pub async fn run(client: &Client, args: UpdateArgs) -> Result<()> {
    let UpdateArgs {
        id,
        app,
        image,
        env,
        command,
        skip_start,
        yes,
    } = args;
    let app = app.name()?;
    let m = client.get_machine(&app, &id).await?;
    let mut config = m.config.clone();
    if let Some(image) = image {
        config.image = image;
    }
    let env = env_pairs(&env)?;
    if !env.is_empty() {
        config.env.get_or_insert_with(Default::default).extend(env);
    }
    if let Some(c) = command {
        config.init.cmd = Some(split(&c, "--command")?);
        config.init.exec = None;
    }
    if config == m.config {
        println!("No changes to apply");
        return Ok(());
    }
    confirm(&format!("Update machine {id}?"), yes)?;
    let req = CreateMachineRequest {
        config: Some(config),
        current_version: Some(m.instance_id.clone()),
        skip_launch: skip_start.then_some(true),
        ..Default::default()
    };
    let updated = client.update_machine(&app, &id, &req, None).await?;
    println!("Machine {id} updated to version {}", updated.instance_id);
    if m.state == "started" && !skip_start {
        wait_for(client, &app, &id, "started", Duration::from_secs(120)).await?;
        println!("Machine {id} is started");
    }
    Ok(())
}
