//! The private DNS view of the live instance set: one [`Network`] per org (the
//! `fdaa:0:<org>::/48` of the machines' 6PN addresses), rebuilt whole whenever the set
//! changes, so a query reads one shared snapshot and never the store.

use std::collections::HashMap;
use std::sync::Arc;

use hangar_proxy::InstanceSet;

use super::names::{Member, Network};

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

impl View {
    pub fn of(set: &InstanceSet) -> View {
        let mut networks: HashMap<u16, Network> = HashMap::new();
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
