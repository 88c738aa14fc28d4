//! WireGuard peers on the API (`/v1/orgs/{org}/wireguard_peers`): what a client asks
//! for, and what it gets back to write the `[Interface]` and `[Peer]` of its config
//! (proxy-network-services.md §2.7). The client makes its own key pair and sends only
//! the public key.

use serde::{Deserialize, Serialize};

/// `POST /v1/orgs/{org}/wireguard_peers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatePeerRequest {
    /// Letters, digits and dashes.
    pub name: String,
    /// The region of the gateway to use; empty for the server's own.
    #[serde(default)]
    pub region: String,
    /// The peer's Curve25519 public key, base64.
    pub public_key: String,
}

/// A peer, with everything its config needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireguardPeer {
    pub name: String,
    pub org_slug: String,
    pub region: String,
    /// The peer's own public key.
    pub public_key: String,
    /// The peer's address (its config's `Address`, with `/120`).
    pub peerip: String,
    /// The gateway's public key (the config's `[Peer] PublicKey`).
    pub gateway_public_key: String,
    /// Where the gateway listens (`Endpoint`), HOST:PORT.
    pub endpoint: String,
    /// The org's resolver (`DNS`).
    pub dns: String,
    /// The org's private network (`AllowedIPs`).
    pub allowed_ips: String,
    pub created_at: String,
}

impl WireguardPeer {
    /// The config a stock WireGuard client (`wg-quick`, the apps) reads, given the
    /// peer's private key.
    pub fn config(&self, private_key: &str) -> String {
        format!(
            "[Interface]\nPrivateKey = {private_key}\nAddress = {}/120\nDNS = {}\n\n[Peer]\nPublicKey = {}\nAllowedIPs = {}\nEndpoint = {}\nPersistentKeepalive = 15\n",
            self.peerip, self.dns, self.gateway_public_key, self.allowed_ips, self.endpoint
        )
    }
}

/// `GET /v1/orgs/{org}/wireguard_peers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireguardPeers {
    pub peers: Vec<WireguardPeer>,
}
