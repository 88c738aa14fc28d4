//! `hangar wireguard create|list|remove`: WireGuard peers that let a laptop or a CI
//! runner onto an org's private network, as `fly wireguard` has them. The key pair is
//! made here and the private key never leaves this computer: the server gets the
//! public key and answers with the peer's address and the gateway's key and endpoint,
//! from which the config a stock WireGuard client reads is written.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use hangar_net::wireguard::Keypair;
use hangar_types::wireguard::{CreatePeerRequest, WireguardPeer};

use crate::{config, output};

/// The org commands act on unless given one.
const DEFAULT_ORG: &str = "personal";

#[derive(Subcommand)]
pub enum WireguardCmd {
    /// Add a peer and write its config (to FILE, or to standard output)
    Create {
        /// The org whose network the peer joins
        org: Option<String>,
        /// The region of the gateway to use (default: the server's)
        region: Option<String>,
        /// The peer's name: letters, digits and dashes (default: this host's name)
        name: Option<String>,
        /// Where to write the config (made readable by you only); it must not exist
        file: Option<PathBuf>,
    },
    /// List the org's peers
    #[command(alias = "ls")]
    List {
        org: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a peer: its key no longer reaches the network
    #[command(alias = "rm")]
    Remove {
        org: Option<String>,
        /// The peer to remove
        name: Option<String>,
    },
}

/// A default peer name: this host's name, made a valid one, and a few random digits.
fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "peer".into());
    let host: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    format!("{}-{:04x}", host.trim_matches('-'), rand::random::<u16>())
}

/// Writes the config to `path`, which must not exist, readable by its owner only.
fn write_config(path: &PathBuf, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "write {} (it must not exist yet: name another file)",
                path.display()
            )
        })?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}

fn print(peers: &[WireguardPeer]) {
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.region.clone(),
                p.peerip.clone(),
                p.created_at.clone(),
            ]
        })
        .collect();
    output::table(&["NAME", "REGION", "PEER IP", "CREATED AT"], &rows);
}

pub async fn run(cmd: WireguardCmd) -> Result<()> {
    match cmd {
        WireguardCmd::Create {
            org,
            region,
            name,
            file,
        } => {
            let org = org.unwrap_or_else(|| DEFAULT_ORG.into());
            if file.as_ref().is_some_and(|f| f.exists()) {
                bail!(
                    "{} already exists: name a new file for the config",
                    file.as_ref()
                        .map(|f| f.display().to_string())
                        .unwrap_or_default()
                );
            }
            let keys = Keypair::generate();
            let req = CreatePeerRequest {
                name: name.unwrap_or_else(default_name),
                region: region.unwrap_or_default(),
                public_key: keys.public.clone(),
            };
            let peer = config::client()?.create_wireguard_peer(&org, &req).await?;
            let text = peer.config(&keys.private);
            match file {
                Some(path) => {
                    write_config(&path, &text)?;
                    println!(
                        "Peer {} added to org {org} ({}); its config is in {}",
                        peer.name,
                        peer.peerip,
                        path.display()
                    );
                }
                None => {
                    eprintln!("!!!! WARNING: the config below holds the peer's private key; keep it secret !!!!");
                    print!("{text}");
                }
            }
        }
        WireguardCmd::List { org, json } => {
            let org = org.unwrap_or_else(|| DEFAULT_ORG.into());
            let peers = config::client()?.wireguard_peers(&org).await?.peers;
            if json {
                return output::json(&peers);
            }
            print(&peers);
        }
        WireguardCmd::Remove { org, name } => {
            let org = org.unwrap_or_else(|| DEFAULT_ORG.into());
            let Some(name) = name else {
                bail!("name the peer to remove: hangar wireguard remove {org} NAME (see `hangar wireguard list {org}`)");
            };
            config::client()?.remove_wireguard_peer(&org, &name).await?;
            println!("Peer {name} removed from org {org}");
        }
    }
    Ok(())
}
