//! The private DNS view of the live instance set, the apps' Flycast addresses and the
//! gateway's WireGuard peers: one [`Network`] per org (the `fdaa:0:<org>::/48` of the
//! machines' 6PN addresses), rebuilt whole whenever any of them changes, so a query
//! reads one shared snapshot and never the store.

use std::collections::HashMap;
use std::sync::Arc;

use hangar_proxy::{AppAddresses, InstanceSet};

use super::names::{Member, Network, Peer};
use hangar_net::wireguard::GatewayPeer;

/// What the resolver answers from at one moment.
#[derive(Debug, Default)]
pub struct View {
    /// Each org's network, by the org number of its 6PN prefix.
    pub networks: HashMap<u16, Arc<Network>>,
    /// Each machine's region, for `top<N>.nearest.of` asked from it.
    pub regions: HashMap<String, String>,
}

/// The org number of a 6PN address (`fdaa:0:<org>:…`).
pub fn org_of(address: &std::net::Ipv6Addr) -> Option<u16> {
    let s = address.segments();
    (s[0] == 0xfdaa && s[1] == 0 && s[2] != 0).then_some(s[2])
}

/// The org number of a Flycast address (`fdaa:0:<org>:0:1::/80`).
pub fn flycast_org(address: &std::net::Ipv6Addr) -> Option<u16> {
    let s = address.segments();
    (s[3] == 0 && s[4] == 1).then_some(())?;
    org_of(address)
}

impl View {
    /// The view of the instance set's machines, as `<app>.flycast` the apps' Flycast
    /// addresses among `addresses`, and as `<name>._peer.internal` the WireGuard peers.
    pub fn of(set: &InstanceSet, addresses: &AppAddresses, peers: &[GatewayPeer]) -> View {
        let mut networks: HashMap<u16, Network> = HashMap::new();
        for p in peers {
            networks.entry(p.org).or_default().peers.push(Peer {
                name: p.name.clone(),
                address: p.address,
            });
        }
        for (ip, app) in addresses {
            let std::net::IpAddr::V6(ip) = ip else {
                continue;
            };
            let Some(org) = flycast_org(ip) else { continue };
            let list = networks
                .entry(org)
                .or_default()
                .flycast
                .entry(app.clone())
                .or_default();
            list.push(*ip);
            list.sort();
        }
        let mut regions = HashMap::new();
        for instances in set.values() {
            for i in instances.iter() {
                regions.insert(i.machine_id.clone(), i.region.clone());
                let Some(private) = i.private.as_ref().filter(|p| p.registered) else {
                    continue;
                };
                let Some(org) = org_of(&private.address) else {
                    continue;
                };
                networks.entry(org).or_default().members.push(Member {
                    machine_id: i.machine_id.clone(),
                    app: i.app.clone(),
                    region: i.region.clone(),
                    process_group: private.process_group.clone(),
                    address: private.address,
                    started: i.state == "started",
                    metadata: private.metadata.clone(),
                });
            }
        }
        View {
            networks: networks
                .into_iter()
                .map(|(org, n)| (org, Arc::new(n)))
                .collect(),
            regions,
        }
    }
}
