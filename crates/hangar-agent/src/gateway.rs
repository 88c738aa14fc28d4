//! The agent's side of WireGuard peers: the set of peers the control plane last gave,
//! kept in the agent's data dir (so after a restart the gateway carries them again
//! without asking anyone), applied to this host's gateway interface
//! ([`hangar_net::wireguard::Gateway`]) and published for private DNS, which answers
//! `<peer>._peer.internal` and listens for peers at their org's `fdaa:0:<org>::3`.
//!
//! Which peers exist, their names and addresses are the control plane's; this module
//! only makes the host match.

use std::path::PathBuf;
use std::sync::Arc;

use hangar_net::wireguard::{Gateway, GatewayPeer};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};

use crate::supervisor::OpError;

/// Where and how this host's gateway listens.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// The interface's name (its name starts with `hangar`, so the host's rules for
    /// Hangar's interfaces cover it).
    pub interface: String,
    /// The UDP port peers send to.
    pub port: u16,
    /// Where the gateway's key and its peers are kept.
    pub dir: PathBuf,
}

/// What a peer's config needs to know of the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayInfo {
    pub public_key: String,
    pub port: u16,
}

/// The gateway of this host and the peers it carries.
pub struct PeerGateway {
    gateway: Gateway,
    file: PathBuf,
    peers: watch::Sender<Arc<Vec<GatewayPeer>>>,
    /// One change at a time: a change is many commands.
    applying: Mutex<()>,
}

impl PeerGateway {
    /// The gateway, carrying no peers until [`PeerGateway::resume`] or
    /// [`PeerGateway::set`].
    pub fn new(settings: &GatewaySettings, peers: watch::Sender<Arc<Vec<GatewayPeer>>>) -> Self {
        PeerGateway {
            gateway: Gateway::new(&settings.interface, settings.port, &settings.dir),
            file: settings.dir.join("peers.json"),
            peers,
            applying: Mutex::new(()),
        }
    }

    /// Puts the peers kept from last time back on the interface (after a restart of
    /// the agent or the host) and publishes them; nothing when there are none.
    pub async fn resume(&self) {
        let _one = self.applying.lock().await;
        let kept: Vec<GatewayPeer> = std::fs::read(&self.file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if kept.is_empty() {
            return;
        }
        match self.gateway.apply(&kept).await {
            Ok(()) => {
                tracing::info!(peers = kept.len(), "WireGuard gateway up");
                self.peers.send_replace(Arc::new(kept));
            }
            Err(e) => tracing::warn!(error = %e, "WireGuard peers cannot reach this host"),
        }
    }

    /// Makes the gateway carry exactly `peers`, keeps them and publishes them.
    pub async fn set(&self, peers: Vec<GatewayPeer>) -> Result<GatewayInfo, OpError> {
        let _one = self.applying.lock().await;
        let unavailable = |e: hangar_net::NetError| {
            OpError::Unavailable(format!("the WireGuard gateway cannot be set up: {e}"))
        };
        if !peers.is_empty() && !nix::unistd::Uid::effective().is_root() {
            return Err(OpError::Unavailable(
                "WireGuard peers need the host's agent to run as root (it makes the gateway's interface, routes and rules)".into(),
            ));
        }
        let keypair = self.gateway.keypair().map_err(unavailable)?;
        let had_any = !self.peers.borrow().is_empty() || self.file.exists();
        if !peers.is_empty() || had_any {
            self.gateway.apply(&peers).await.map_err(unavailable)?;
        }
        let body = serde_json::to_vec_pretty(&peers)
            .map_err(|e| OpError::Internal(format!("encode the peers: {e}")))?;
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| OpError::Internal(format!("create {}: {e}", dir.display())))?;
        }
        let part = self.file.with_extension("json.part");
        std::fs::write(&part, body)
            .and_then(|()| std::fs::rename(&part, &self.file))
            .map_err(|e| {
                OpError::Internal(format!("keep the peers in {}: {e}", self.file.display()))
            })?;
        self.peers.send_replace(Arc::new(peers));
        Ok(GatewayInfo {
            public_key: keypair.public,
            port: self.gateway.port(),
        })
    }
}
