//! The resolver's listeners: one hickory server per container machine, on sockets
//! bound inside the machine's network namespace (`hangar_net::Network::bind_resolver`),
//! made as the machine joins its network (the driver's attach hook) and, after an agent
//! restart, for every machine whose namespace is still there. A machine's server goes
//! when the machine is destroyed. WireGuard peers reach their org's resolver at
//! `fdaa:0:<org>::3` on the gateway's interface: one server per org with peers, in the
//! host's namespace. It also keeps the shared [`View`] current from the live instance
//! set, the apps' addresses and the peers.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_net::wireguard::GatewayPeer;
use hangar_proxy::{AppAddresses, InstanceSet};
use hickory_server::Server;
use tokio::sync::watch;

use super::server::{MachineResolver, Shared};
use super::view::{org_of, View};

/// How long a TCP connection may sit without a query before it is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

pub struct Listeners {
    shared: Arc<Shared>,
    /// Each served machine's server, with the inode of the namespace it listens in
    /// (dropping the server stops its tasks and closes its sockets).
    servers: Mutex<HashMap<String, (u64, Server<MachineResolver>)>>,
    /// Machines found with no namespace to listen in (process-driver machines), not
    /// tried again until the driver says they are attached.
    without: Mutex<HashSet<String>>,
    /// Each org's server for its WireGuard peers.
    peers: Mutex<HashMap<u16, Server<MachineResolver>>>,
}

impl Listeners {
    pub fn new(shared: Arc<Shared>) -> Arc<Listeners> {
        Arc::new(Listeners {
            shared,
            servers: Mutex::default(),
            without: Mutex::default(),
            peers: Mutex::default(),
        })
    }

    /// Starts serving machine `machine_id` (6PN address `ipv6`) in its namespace, unless
    /// it is served there already; a server in a namespace since remade is replaced.
    pub fn serve(&self, machine_id: &str, ipv6: &str) {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        let current = hangar_net::Network::netns_inode(machine_id);
        if current.is_some() && servers.get(machine_id).map(|s| s.0) == current {
            return;
        }
        servers.remove(machine_id);
        let Some(org) = ipv6.parse().ok().as_ref().and_then(org_of) else {
            return;
        };
        let sockets = match hangar_net::Network::bind_resolver(machine_id, ipv6) {
            Ok(Some(s)) => s,
            Ok(None) => {
                self.without
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(machine_id.to_string());
                return;
            }
            Err(e) => {
                tracing::warn!(machine = machine_id, error = %e, "private DNS cannot listen in the machine");
                return;
            }
        };
        let sockets_netns = sockets.netns;
        let mut server = Server::new(MachineResolver {
            shared: self.shared.clone(),
            machine_id: machine_id.to_string(),
            org,
        });
        for udp in sockets.udp {
            match tokio::net::UdpSocket::from_std(udp) {
                Ok(s) => server.register_socket(s),
                Err(e) => tracing::warn!(error = %e, "private DNS: UDP socket"),
            }
        }
        for tcp in sockets.tcp {
            match tokio::net::TcpListener::from_std(tcp) {
                Ok(l) => server.register_listener(l, TCP_IDLE, 64),
                Err(e) => tracing::warn!(error = %e, "private DNS: TCP socket"),
            }
        }
        self.without
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(machine_id);
        servers.insert(machine_id.to_string(), (sockets_netns, server));
    }

    /// Serves the resolver of each org that has peers at its `fdaa:0:<org>::3` (an
    /// address of the gateway's interface), and stops for orgs with none left.
    fn serve_peers(&self, peers: &[GatewayPeer]) {
        let orgs: HashSet<u16> = peers.iter().map(|p| p.org).collect();
        let mut servers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        servers.retain(|org, _| orgs.contains(org));
        for org in orgs {
            if servers.contains_key(&org) {
                continue;
            }
            let at = SocketAddr::from((hangar_net::wireguard::org_resolver(org), 53));
            let bound = (|| {
                let udp = std::net::UdpSocket::bind(at)?;
                udp.set_nonblocking(true)?;
                let tcp = std::net::TcpListener::bind(at)?;
                tcp.set_nonblocking(true)?;
                Ok::<_, std::io::Error>((
                    tokio::net::UdpSocket::from_std(udp)?,
                    tokio::net::TcpListener::from_std(tcp)?,
                ))
            })();
            match bound {
                Ok((udp, tcp)) => {
                    let mut server = Server::new(MachineResolver {
                        shared: self.shared.clone(),
                        machine_id: String::new(),
                        org,
                    });
                    server.register_socket(udp);
                    server.register_listener(tcp, TCP_IDLE, 64);
                    servers.insert(org, server);
                }
                Err(e) => {
                    tracing::warn!(%at, error = %e, "private DNS cannot listen for WireGuard peers")
                }
            }
        }
    }

    /// Follows the instance set, the apps' addresses and the gateway's peers:
    /// republishes the view, serves machines not served yet (after a restart) and stops
    /// serving machines that are gone.
    pub async fn follow(
        self: Arc<Self>,
        mut instances: watch::Receiver<Arc<InstanceSet>>,
        mut addresses: watch::Receiver<Arc<AppAddresses>>,
        mut peers: watch::Receiver<Arc<Vec<GatewayPeer>>>,
    ) {
        loop {
            let set = instances.borrow_and_update().clone();
            let gateway_peers = peers.borrow_and_update().clone();
            let view = View::of(&set, &addresses.borrow_and_update().clone(), &gateway_peers);
            *self.shared.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
            let live: HashMap<&str, String> = set
                .values()
                .flat_map(|list| list.iter())
                .filter_map(|i| {
                    let p = i.private.as_ref()?;
                    Some((i.machine_id.as_str(), p.address.to_string()))
                })
                .collect();
            let unserved: Vec<(String, String)> = {
                let servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
                let without = self.without.lock().unwrap_or_else(|p| p.into_inner());
                live.iter()
                    .filter(|(id, _)| !servers.contains_key(**id) && !without.contains(**id))
                    .map(|(id, ip)| (id.to_string(), ip.clone()))
                    .collect()
            };
            for (id, ip) in unserved {
                self.serve(&id, &ip);
            }
            {
                let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
                servers.retain(|id, _| live.contains_key(id.as_str()));
                let mut without = self.without.lock().unwrap_or_else(|p| p.into_inner());
                without.retain(|id| live.contains_key(id.as_str()));
            }
            self.serve_peers(&gateway_peers);
            let changed = tokio::select! {
                r = instances.changed() => r,
                r = addresses.changed() => r,
                r = peers.changed() => r,
            };
            if changed.is_err() {
                return;
            }
        }
    }
}
