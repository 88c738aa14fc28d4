//! `hangar ips list|allocate-v4|allocate-v6|release`, as flyctl has them.

use anyhow::Result;
use clap::Subcommand;
use hangar_types::edge::{AllocateIpRequest, IpAssignment};

use super::AppArg;
use crate::{config, output};

#[derive(Subcommand)]
pub enum IpsCmd {
    /// List the app's IP addresses
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        json: bool,
    },
    /// Allocate an IPv4 address (dedicated unless --shared)
    AllocateV4 {
        #[command(flatten)]
        app: AppArg,
        /// Use the edge's shared IPv4 address
        #[arg(long)]
        shared: bool,
        #[arg(short = 'r', long)]
        region: Option<String>,
        /// Accepted for flyctl compatibility; nothing here costs money
        #[arg(short = 'y', long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Allocate an IPv6 address (public, or private with --private)
    AllocateV6 {
        #[command(flatten)]
        app: AppArg,
        /// A private (Flycast) address in the org's network
        #[arg(long)]
        private: bool,
        #[arg(long)]
        network: Option<String>,
        #[arg(short = 'r', long)]
        region: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Release IP addresses
    Release {
        #[command(flatten)]
        app: AppArg,
        #[arg(required = true)]
        ips: Vec<String>,
    },
}

fn kind_label(ip: &IpAssignment) -> &'static str {
    match ip.kind.as_str() {
        "shared_v4" => "public (shared)",
        "private_v6" => "private",
        _ => "public (dedicated)",
    }
}

fn version(ip: &IpAssignment) -> &'static str {
    if ip.ip.contains(':') {
        "v6"
    } else {
        "v4"
    }
}

fn print(ips: &[IpAssignment]) {
    let rows: Vec<Vec<String>> = ips
        .iter()
        .map(|ip| {
            vec![
                version(ip).to_string(),
                ip.ip.clone(),
                kind_label(ip).to_string(),
                ip.region.clone(),
                ip.created_at.clone(),
            ]
        })
        .collect();
    output::table(&["VERSION", "IP", "TYPE", "REGION", "CREATED AT"], &rows);
}

async fn allocate(app: &AppArg, req: AllocateIpRequest, json: bool) -> Result<()> {
    let name = app.name()?;
    let ip = config::client()?.allocate_ip(&name, &req).await?;
    if json {
        return output::json(&ip);
    }
    print(std::slice::from_ref(&ip));
    Ok(())
}

pub async fn run(cmd: IpsCmd) -> Result<()> {
    match cmd {
        IpsCmd::List { app, json } => {
            let ips = config::client()?.list_ips(&app.name()?).await?.ips;
            if json {
                return output::json(&ips);
            }
            print(&ips);
        }
        IpsCmd::AllocateV4 {
            app,
            shared,
            region,
            yes: _,
            json,
        } => {
            let kind = if shared { "shared_v4" } else { "v4" };
            let req = AllocateIpRequest {
                kind: kind.into(),
                region,
                ..Default::default()
            };
            allocate(&app, req, json).await?;
        }
        IpsCmd::AllocateV6 {
            app,
            private,
            network,
            region,
            json,
        } => {
            let kind = if private { "private_v6" } else { "v6" };
            let req = AllocateIpRequest {
                kind: kind.into(),
                region,
                network,
                ..Default::default()
            };
            allocate(&app, req, json).await?;
        }
        IpsCmd::Release { app, ips } => {
            let name = app.name()?;
            let client = config::client()?;
            for ip in ips {
                client.release_ip(&name, &ip).await?;
                println!("Released {ip} from {name}");
            }
        }
    }
    Ok(())
}
