//! `hangar orgs create|list|show|destroy`, as `fly orgs` has them. Each org has its own
//! private network, apps and tokens; creating one (with the admin token) prints its
//! first token, once.

use anyhow::Result;
use clap::Subcommand;
use hangar_types::org::{CreateOrgRequest, Org};

use crate::{config, output};

#[derive(Subcommand)]
pub enum OrgsCmd {
    /// Create an org and print its first token
    Create {
        /// The org's name
        name: String,
        /// Its slug (default: made from the name)
        #[arg(long)]
        slug: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List the orgs this token sees
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show an org
    Show {
        slug: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove an org that has no apps left, with its tokens
    #[command(alias = "delete")]
    Destroy {
        slug: String,
        /// Do not ask for confirmation
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

fn print(orgs: &[Org]) {
    let rows: Vec<Vec<String>> = orgs
        .iter()
        .map(|o| vec![o.name.clone(), o.slug.clone(), o.numeric_id.to_string()])
        .collect();
    output::table(&["NAME", "SLUG", "NUMBER"], &rows);
}

pub async fn run(cmd: OrgsCmd) -> Result<()> {
    let client = config::client()?;
    match cmd {
        OrgsCmd::Create { name, slug, json } => {
            let created = client.create_org(&CreateOrgRequest { name, slug }).await?;
            if json {
                return output::json(&created);
            }
            println!(
                "Org {} ({}) created. Its token, shown only now:\n\n{}\n\nUse it with HANGAR_API_TOKEN (or FLY_API_TOKEN) to create and run apps in the org.",
                created.org.name, created.org.slug, created.token
            );
        }
        OrgsCmd::List { json } => {
            let orgs = client.orgs().await?.orgs;
            if json {
                return output::json(&orgs);
            }
            print(&orgs);
        }
        OrgsCmd::Show { slug, json } => {
            let org = client.org(&slug).await?;
            if json {
                return output::json(&org);
            }
            print(std::slice::from_ref(&org));
        }
        OrgsCmd::Destroy { slug, yes } => {
            super::confirm(&format!("Destroy org {slug} and its tokens?"), yes)?;
            client.destroy_org(&slug).await?;
            println!("Org {slug} destroyed");
        }
    }
    Ok(())
}
