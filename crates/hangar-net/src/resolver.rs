//! Where a machine finds the platform's DNS resolver: `fdaa::3` and its org prefix's
//! `::3` (`fdaa:0:<org>::3`), both on the loopback interface of the machine's own
//! network namespace, with sockets bound there by the host's agent.
//!
//! A resolver reached inside each machine's namespace knows who asks from the socket
//! a query arrives on, not from a source address a machine could forge, and several
//! agents on one host never contend for one address. This module binds the sockets;
//! what they answer is the agent's DNS server's job.

use std::net::{Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::{io, NetError, Network};

/// The platform's DNS resolver address inside 6PN, as on Fly.
pub const RESOLVER: &str = "fdaa::3";

/// The resolver's addresses in a machine of org `org`: `fdaa::3` and `fdaa:0:<org>::3`.
pub fn resolver_addresses(org: u16) -> [Ipv6Addr; 2] {
    [
        Ipv6Addr::new(0xfdaa, 0, 0, 0, 0, 0, 0, 3),
        Ipv6Addr::new(0xfdaa, 0, org, 0, 0, 0, 0, 3),
    ]
}

/// The DNS sockets bound in one machine's network namespace (UDP and TCP on port 53
/// of each resolver address), non-blocking, ready for tokio.
#[derive(Debug)]
pub struct ResolverSockets {
    /// The namespace they are in (its inode: a remade namespace has another).
    pub netns: u64,
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: Vec<std::net::TcpListener>,
}

impl Network {
    /// The inode of the machine's network namespace, while it has one.
    pub fn netns_inode(machine_id: &str) -> Option<u64> {
        let path = Path::new("/run/netns").join(Self::netns_name(machine_id));
        std::fs::metadata(path).ok().map(|m| m.ino())
    }

    /// Binds the resolver's sockets inside the network namespace of `machine_id`, whose
    /// 6PN address is `ipv6`. `Ok(None)` when the machine has no namespace (it is not a
    /// container machine, or it is not attached).
    pub fn bind_resolver(
        machine_id: &str,
        ipv6: &str,
    ) -> Result<Option<ResolverSockets>, NetError> {
        let (org, _) = crate::org_of(ipv6)?;
        let path = Path::new("/run/netns").join(Self::netns_name(machine_id));
        let netns = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(format!("open {}", path.display()), e)),
        };
        let inode = netns
            .metadata()
            .map_err(|e| io(format!("stat {}", path.display()), e))?
            .ino();
        let addresses = resolver_addresses(org);
        // A thread of its own enters the namespace, so no thread of the runtime ever
        // changes namespace; sockets stay in the namespace they were made in.
        let bound = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<ResolverSockets, NetError> {
                    nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|e| io("enter the machine's network namespace", e.into()))?;
                    let mut sockets = ResolverSockets {
                        netns: inode,
                        udp: Vec::new(),
                        tcp: Vec::new(),
                    };
                    for address in addresses {
                        let at = SocketAddr::from((address, 53));
                        let udp = bind_or_add(&at, || std::net::UdpSocket::bind(at))?;
                        udp.set_nonblocking(true)
                            .map_err(|e| io("set the DNS socket non-blocking", e))?;
                        let tcp = std::net::TcpListener::bind(at)
                            .map_err(|e| io(format!("listen on {at} for DNS over TCP"), e))?;
                        tcp.set_nonblocking(true)
                            .map_err(|e| io("set the DNS socket non-blocking", e))?;
                        sockets.udp.push(udp);
                        sockets.tcp.push(tcp);
                    }
                    Ok(sockets)
                })
                .join()
                .map_err(|_| {
                    io(
                        "bind the DNS sockets",
                        std::io::Error::other("thread panicked"),
                    )
                })?
        })?;
        Ok(Some(bound))
    }
}

/// Binds with `bind`; when the address is not there yet (a namespace made before the
/// resolver had addresses), adds it to `lo` from inside the namespace and binds again.
fn bind_or_add<T>(at: &SocketAddr, bind: impl Fn() -> std::io::Result<T>) -> Result<T, NetError> {
    match bind() {
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            let out = std::process::Command::new("ip")
                .args([
                    "-6",
                    "addr",
                    "add",
                    &format!("{}/128", at.ip()),
                    "dev",
                    "lo",
                    "nodad",
                ])
                .output()
                .map_err(|error| NetError::Spawn {
                    command: "ip -6 addr add".into(),
                    error,
                })?;
            if !out.status.success() {
                return Err(NetError::Command {
                    command: format!("ip -6 addr add {}/128 dev lo", at.ip()),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            bind().map_err(|e| io(format!("bind {at} for DNS"), e))
        }
        other => other.map_err(|e| io(format!("bind {at} for DNS"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_finds_the_resolver_at_fdaa_3_and_its_org_prefix() {
        let [shared, org] = resolver_addresses(0x1f);
        assert_eq!(shared.to_string(), RESOLVER);
        assert_eq!(org.to_string(), "fdaa:0:1f::3");
    }
}
