//! WireGuard peers of each org, the control plane's side: names and keys checked, an
//! address chosen in the org's `fdaa:0:<org>:ffff::/64`, the row stored, and the whole
//! set handed to the gateway host's agent, which makes its interface match. A peer the
//! gateway refuses is not kept. What a peer's config says of the gateway (its key and
//! endpoint) comes back from the agent and the server's settings.
//!
//! The interface, routes and rules are the agent's ([`hangar_agent::gateway`]).

use hangar_agent::api::GatewayPeer;
use hangar_net::wireguard::{self as wg, org_network, org_resolver, peer_address};
use hangar_store::WireguardPeerRecord;
use hangar_types::wireguard::WireguardPeer;
use tokio::sync::Mutex;

use crate::api::ApiError;
use crate::AppState;

/// The peers' side of the server: where configs say the gateway is, and one change
/// at a time (each hands the agent the whole set).
#[derive(Default)]
pub struct PeerBook {
    /// `HOST:PORT` for configs' `Endpoint`; `None`: the host the API was reached at.
    pub endpoint: Option<String>,
    changes: Mutex<()>,
    /// What the gateway said of itself last.
    gateway: std::sync::Mutex<Option<hangar_agent::gateway::GatewayInfo>>,
}

impl PeerBook {
    pub fn new(endpoint: Option<String>) -> Self {
        PeerBook {
            endpoint,
            ..Default::default()
        }
    }
}

/// The most peers an org may have (the slots of its peer range).
const MOST_PEERS: u16 = u16::MAX - 1;

/// A peer's name: letters, digits and dashes, as Fly's.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "invalid peer name {name:?}: use letters, digits and dashes (at most 63), such as my-laptop"
        )))
    }
}

/// What the gateway needs of a stored peer; `None` for a row whose address is not one
/// of ours (written by hand).
fn gateway_peer(r: &WireguardPeerRecord, org: u16) -> Option<GatewayPeer> {
    Some(GatewayPeer {
        org,
        name: r.name.clone(),
        public_key: r.public_key.clone(),
        address: r.address.parse().ok()?,
    })
}

/// The peer as the API shows it, with the gateway's key and endpoint.
pub fn view(r: &WireguardPeerRecord, org: u16, gateway_key: &str, endpoint: &str) -> WireguardPeer {
    WireguardPeer {
        name: r.name.clone(),
        org_slug: r.org_slug.clone(),
        region: r.region.clone(),
        public_key: r.public_key.clone(),
        peerip: r.address.clone(),
        gateway_public_key: gateway_key.to_string(),
        endpoint: endpoint.to_string(),
        dns: org_resolver(org).to_string(),
        allowed_ips: org_network(org),
        created_at: r.created_at.clone(),
    }
}

/// Every org's number, by slug.
async fn org_numbers(s: &AppState) -> Result<std::collections::HashMap<String, u16>, ApiError> {
    let orgs = s.store.call(|db| db.orgs()).await?;
    Ok(orgs
        .into_iter()
        .map(|o| (o.slug, (o.numeric_id & 0xffff) as u16))
        .collect())
}

/// Hands the agent every stored peer; what their configs need of the gateway.
async fn sync(s: &AppState) -> Result<hangar_agent::gateway::GatewayInfo, ApiError> {
    let numbers = org_numbers(s).await?;
    let rows = s.store.call(|db| db.wireguard_peers(None)).await?;
    let peers: Vec<GatewayPeer> = rows
        .iter()
        .filter_map(|r| gateway_peer(r, *numbers.get(&r.org_slug)?))
        .collect();
    let info = s.agent.api().wireguard(peers).await.map_err(|e| match e {
        hangar_agent::api::OpError::Unavailable(m) => {
            ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, m).with_code("unavailable")
        }
        other => ApiError::from(other),
    })?;
    *s.peers.gateway.lock().unwrap_or_else(|p| p.into_inner()) = Some(info.clone());
    Ok(info)
}

/// Where configs say the gateway is: the server's setting, or the API's host with the
/// gateway's port.
fn endpoint(s: &AppState, api_host: &str, port: u16) -> String {
    endpoint_of(s.peers.endpoint.as_deref(), api_host, port)
}

fn endpoint_of(configured: Option<&str>, api_host: &str, port: u16) -> String {
    if let Some(e) = configured {
        return e.to_string();
    }
    let host = match api_host.rsplit_once(':') {
        // `[v6]:port` or `name:port`; a bare IPv6 address has more colons.
        Some((h, p)) if p.parse::<u16>().is_ok() && (h.starts_with('[') || !h.contains(':')) => h,
        _ => api_host,
    };
    format!("{host}:{port}")
}

/// Adds a peer to the org: checked, given an address, stored, carried by the gateway.
pub async fn create(
    s: &AppState,
    org_slug: &str,
    org: u16,
    name: &str,
    region: &str,
    public_key: &str,
    api_host: &str,
) -> Result<WireguardPeer, ApiError> {
    check_name(name)?;
    if !wg::is_public_key(public_key) {
        return Err(ApiError::invalid(
            "public_key must be a WireGuard public key (32 bytes in base64, as `wg pubkey` prints)",
        ));
    }
    let _one = s.peers.changes.lock().await;
    let slug = org_slug.to_string();
    let existing = s
        .store
        .call(move |db| db.wireguard_peers(Some(&slug)))
        .await?;
    if existing.iter().any(|p| p.name == name) {
        return Err(ApiError::conflict(format!(
            "the org already has a peer named {name}: choose another name, or `hangar wireguard remove {org_slug} {name}` first"
        )));
    }
    let taken: std::collections::HashSet<String> =
        existing.iter().map(|p| p.address.clone()).collect();
    let Some(address) = (1..=MOST_PEERS)
        .map(|slot| peer_address(org, slot).to_string())
        .find(|a| !taken.contains(a))
    else {
        return Err(ApiError::conflict(
            "the org has as many peers as it can: remove some with `hangar wireguard remove`",
        ));
    };
    let record = WireguardPeerRecord {
        org_slug: org_slug.to_string(),
        name: name.to_string(),
        region: if region.is_empty() {
            s.region.to_string()
        } else {
            region.to_string()
        },
        public_key: public_key.to_string(),
        address,
        created_at: hangar_agent::clock::rfc3339_now(),
    };
    let row = record.clone();
    s.store
        .call(move |db| db.insert_wireguard_peer(&row))
        .await
        .map_err(|e| {
            if e.is_unique_violation() {
                ApiError::conflict(
                    "a peer with this public key exists already: make a new key pair for each peer",
                )
            } else {
                e.into()
            }
        })?;
    match sync(s).await {
        Ok(info) => Ok(view(
            &record,
            org,
            &info.public_key,
            &endpoint(s, api_host, info.port),
        )),
        Err(e) => {
            // Not kept: a peer the gateway does not carry would be a config that
            // leads nowhere.
            let (slug, n) = (org_slug.to_string(), name.to_string());
            let _ = s
                .store
                .call(move |db| db.delete_wireguard_peer(&slug, &n))
                .await;
            Err(e)
        }
    }
}

/// The org's peers, with what their configs need of the gateway.
pub async fn list(
    s: &AppState,
    org_slug: &str,
    org: u16,
    api_host: &str,
) -> Result<Vec<WireguardPeer>, ApiError> {
    let slug = org_slug.to_string();
    let rows = s
        .store
        .call(move |db| db.wireguard_peers(Some(&slug)))
        .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let known = s
        .peers
        .gateway
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let info = match known {
        Some(info) => info,
        None => {
            let _one = s.peers.changes.lock().await;
            sync(s).await?
        }
    };
    let at = endpoint(s, api_host, info.port);
    Ok(rows
        .iter()
        .map(|r| view(r, org, &info.public_key, &at))
        .collect())
}

/// Removes the org's peer `name`: its row, then its place on the gateway.
pub async fn remove(s: &AppState, org_slug: &str, name: &str) -> Result<(), ApiError> {
    let _one = s.peers.changes.lock().await;
    let (slug, n) = (org_slug.to_string(), name.to_string());
    let removed = s
        .store
        .call(move |db| db.delete_wireguard_peer(&slug, &n))
        .await?;
    if !removed {
        return Err(ApiError::not_found(format!(
            "the org has no peer named {name}; see `hangar wireguard list {org_slug}`"
        )));
    }
    sync(s).await.map(|_| ())
}

/// After a start: the gateway carries what the store holds (its own copy may be older,
/// or gone with its data dir). Nothing to do without peers.
pub async fn resume(s: AppState) {
    let any = s.store.call(|db| db.wireguard_peers(None)).await;
    if !any.is_ok_and(|p| !p.is_empty()) {
        return;
    }
    let _one = s.peers.changes.lock().await;
    if let Err(e) = sync(&s).await {
        tracing::warn!(error = %e.message, "WireGuard peers not handed to the gateway");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_setting_or_the_apis_host() {
        assert_eq!(
            endpoint_of(Some("gw.example.com:4500"), "x:1", 51820),
            "gw.example.com:4500"
        );
        assert_eq!(
            endpoint_of(None, "hangar.example.com:4280", 51820),
            "hangar.example.com:51820"
        );
        assert_eq!(endpoint_of(None, "10.0.0.5", 51820), "10.0.0.5:51820");
        assert_eq!(
            endpoint_of(None, "[2001:db8::1]:4280", 51820),
            "[2001:db8::1]:51820"
        );
    }

    #[test]
    fn peer_names_are_letters_digits_and_dashes() {
        assert!(check_name("my-laptop-2").is_ok());
        for bad in ["", "has space", "under_score", "dot.ted", &"x".repeat(64)] {
            let e = check_name(bad).unwrap_err();
            assert!(
                e.message.contains("invalid peer name"),
                "{bad}: {}",
                e.message
            );
        }
    }
}
