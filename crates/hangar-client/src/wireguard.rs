//! An org's WireGuard peers: `/orgs/{org}/wireguard_peers`.

use hangar_types::wireguard::{CreatePeerRequest, WireguardPeer, WireguardPeers};
use reqwest::Method;

use crate::{Client, Result};

impl Client {
    pub async fn wireguard_peers(&self, org: &str) -> Result<WireguardPeers> {
        self.call(
            Method::GET,
            &format!("/orgs/{org}/wireguard_peers"),
            Self::NONE,
            &[],
        )
        .await
    }

    pub async fn create_wireguard_peer(
        &self,
        org: &str,
        req: &CreatePeerRequest,
    ) -> Result<WireguardPeer> {
        self.call(
            Method::POST,
            &format!("/orgs/{org}/wireguard_peers"),
            Some(req),
            &[],
        )
        .await
    }

    pub async fn remove_wireguard_peer(&self, org: &str, name: &str) -> Result<()> {
        self.call_raw(
            Method::DELETE,
            &format!("/orgs/{org}/wireguard_peers/{name}"),
            Self::NONE,
            &[],
        )
        .await
        .map(|_| ())
    }
}
