//! Private DNS for machines, as Fly's `fdaa::3`: the `.internal` and `.flycast` names
//! of each private network (`names/`), the view of them kept from the live instance set
//! (`view.rs`), the resolver each container machine reaches at `fdaa::3` and its org
//! prefix's `::3` inside its own namespace, and WireGuard peers at their org's `::3` on
//! the gateway (`listeners.rs`, `server.rs`, on hickory-server), and recursion with a cache for every other name (`upstream.rs`).
//! The store is never asked per lookup. Machines of the process driver have no private
//! network and use the host's resolvers.

pub mod names;

mod listeners;
mod server;
mod upstream;
mod view;

pub(crate) use view::{org_of, View};

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use hangar_proxy::{AppAddresses, InstanceSet};
use hangar_runtime::Driver;
use tokio::sync::watch;

/// How the agent's resolver answers public names.
#[derive(Debug, Clone, Default)]
pub struct DnsSettings {
    /// The resolvers to ask (UDP and TCP); empty means the host's `/etc/resolv.conf`.
    pub upstream: Vec<SocketAddr>,
}

/// Starts private DNS: every container machine gets its resolver as it joins its
/// network (and those already running get theirs now), answering from `instances`.
pub fn start(
    driver: &Arc<dyn Driver>,
    instances: watch::Receiver<Arc<InstanceSet>>,
    addresses: watch::Receiver<Arc<AppAddresses>>,
    peers: watch::Receiver<Arc<Vec<hangar_net::wireguard::GatewayPeer>>>,
    settings: &DnsSettings,
) {
    let upstream = match upstream::Upstream::new(&settings.upstream) {
        Ok(u) => Some(u),
        Err(e) => {
            tracing::warn!(error = %e, "machines' public names will not resolve");
            None
        }
    };
    let shared = Arc::new(server::Shared {
        view: RwLock::default(),
        upstream,
    });
    let listeners = listeners::Listeners::new(shared);
    let hook = listeners.clone();
    driver.on_network_attach(Arc::new(move |machine_id: &str, ipv6: &str| {
        hook.serve(machine_id, ipv6);
    }));
    tokio::spawn(listeners.follow(instances, addresses, peers));
}

/// A resolver over fixed networks on sockets of the caller's choosing, answering as
/// it answers a machine `machine_id` of org `org` (for benchmarks and wire tests; the
/// platform's own resolvers follow the instance set). Serves until dropped.
pub struct FixedResolver {
    _server: hickory_server::Server<server::MachineResolver>,
}

impl FixedResolver {
    pub fn serve(
        networks: std::collections::HashMap<u16, names::Network>,
        asker: (&str, u16),
        udp: tokio::net::UdpSocket,
        tcp: tokio::net::TcpListener,
        settings: &DnsSettings,
    ) -> Result<FixedResolver, String> {
        let view = view::View {
            networks: networks
                .into_iter()
                .map(|(org, n)| (org, Arc::new(n)))
                .collect(),
            regions: Default::default(),
        };
        let shared = Arc::new(server::Shared {
            view: RwLock::new(Arc::new(view)),
            upstream: Some(upstream::Upstream::new(&settings.upstream)?),
        });
        let mut server = hickory_server::Server::new(server::MachineResolver {
            shared,
            machine_id: asker.0.to_string(),
            org: asker.1,
        });
        server.register_socket(udp);
        server.register_listener(tcp, std::time::Duration::from_secs(10), 64);
        Ok(FixedResolver { _server: server })
    }
}

#[cfg(test)]
mod tests;
