//! `hangar machine leases view|clear`: the leases that guard machines against
//! concurrent changes, shown (a machine with none shows none) or released whoever holds
//! them. Taking a lease for a change is the server's and the deployer's business, not
//! this module's.

use anyhow::Result;
use clap::Subcommand;
use hangar_client::Client;
use serde_json::json;

use super::need_ids;
use crate::commands::AppArg;
use crate::output;

#[derive(Subcommand)]
pub enum LeasesCmd {
    /// Show the leases on machines
    View {
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        json: bool,
    },
    /// Release the leases on machines, whoever holds them
    Clear {
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArg,
    },
}

pub async fn run(client: &Client, cmd: LeasesCmd) -> Result<()> {
    match cmd {
        LeasesCmd::View { ids, app, json } => view(client, ids, app, json).await,
        LeasesCmd::Clear { ids, app } => clear(client, ids, app).await,
    }
}

async fn view(client: &Client, ids: Vec<String>, app: AppArg, as_json: bool) -> Result<()> {
    let (app, _) = (app.name()?, need_ids(&ids)?);
    let mut rows = Vec::new();
    let mut all = Vec::new();
    for id in ids {
        match client.lease(&app, &id).await {
            Ok(env) => {
                if let Some(l) = &env.data {
                    rows.push(vec![
                        id.clone(),
                        l.nonce.clone().unwrap_or_default(),
                        l.expires_at.to_string(),
                        l.owner.clone(),
                        l.description.clone(),
                    ]);
                }
                all.push(json!({ "machine": id, "lease": env.data }));
            }
            Err(e) if e.status().map(|s| s.as_u16()) == Some(404) => {
                all.push(json!({ "machine": id, "lease": null }))
            }
            Err(e) => return Err(e.into()),
        }
    }
    if as_json {
        output::json(&all)?;
    } else {
        output::table(
            &["MACHINE", "NONCE", "EXPIRES AT", "OWNER", "DESCRIPTION"],
            &rows,
        );
    }
    Ok(())
}

async fn clear(client: &Client, ids: Vec<String>, app: AppArg) -> Result<()> {
    let (app, _) = (app.name()?, need_ids(&ids)?);
    for id in ids {
        match client.lease(&app, &id).await {
            Ok(env) => {
                let nonce = env.data.and_then(|l| l.nonce).unwrap_or_default();
                client.release_lease(&app, &id, &nonce).await?;
                println!("Cleared lease for {id}");
            }
            Err(e) if e.status().map(|s| s.as_u16()) == Some(404) => {
                println!("No lease on {id}")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
