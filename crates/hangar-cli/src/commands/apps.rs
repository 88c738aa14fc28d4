//! `hangar apps create|list|show|restart|destroy`.

use anyhow::Result;
use clap::Subcommand;

use super::{confirm, AppArg};
use crate::{config, output};

#[derive(Subcommand)]
pub enum AppsCmd {
    /// Create an app
    Create {
        name: String,
        #[arg(short = 'o', long, default_value = "personal")]
        org: String,
        #[arg(long)]
        json: bool,
    },
    /// List apps
    #[command(alias = "ls")]
    List {
        #[arg(short = 'o', long, default_value = "personal")]
        org: String,
        #[arg(long)]
        json: bool,
    },
    /// Show one app
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Restart every started machine of an app, one at a time
    Restart {
        /// The app (else -a, or the app in fly.toml)
        name: Option<String>,
        #[command(flatten)]
        app: AppArg,
        /// Kill each machine instead of stopping it with its kill signal
        #[arg(long)]
        force_stop: bool,
        /// Move on once a machine is started, without waiting for its checks
        #[arg(long)]
        skip_health_checks: bool,
    },
    /// Destroy an app and all its machines
    #[command(alias = "delete")]
    Destroy {
        name: String,
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

pub async fn run(cmd: AppsCmd) -> Result<()> {
    let client = config::client()?;
    match cmd {
        AppsCmd::Create { name, org, json } => {
            let app = client.create_app(&name, &org).await?;
            if json {
                return output::json(&app);
            }
            println!("New app created: {}", app.name);
        }
        AppsCmd::List { org, json } => {
            let apps = client.list_apps(&org).await?;
            if json {
                return output::json(&apps.apps);
            }
            let rows: Vec<Vec<String>> = apps
                .apps
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        a.organization
                            .as_ref()
                            .map(|o| o.slug.clone())
                            .unwrap_or_default(),
                        a.status.clone(),
                        a.machine_count.to_string(),
                    ]
                })
                .collect();
            output::table(&["NAME", "OWNER", "STATUS", "MACHINES"], &rows);
        }
        AppsCmd::Show { name, json } => {
            let app = client.get_app(&name).await?;
            if json {
                return output::json(&app);
            }
            output::table(
                &["NAME", "OWNER", "STATUS", "MACHINES", "NETWORK", "ID"],
                &[vec![
                    app.name,
                    app.organization.slug,
                    app.status,
                    app.machine_count.to_string(),
                    app.network,
                    app.id,
                ]],
            );
        }
        AppsCmd::Restart {
            name,
            app,
            force_stop,
            skip_health_checks,
        } => {
            let name = match name {
                Some(n) => n,
                None => app.name()?,
            };
            super::status::restart(&name, force_stop, !skip_health_checks).await?
        }
        AppsCmd::Destroy { name, yes } => {
            confirm(&format!("Destroy app {name} and all its machines?"), yes)?;
            client.delete_app(&name).await?;
            println!("Destroyed app {name}");
        }
    }
    Ok(())
}
