//! App addresses: the shared IPv4 (the edge listener's address, held by every app),
//! dedicated IPv4 and IPv6 from the configured pools, and private (Flycast-style) IPv6
//! inside the org's 6PN prefix. Allocation picks the lowest free address in one store
//! transaction, so two apps never hold the same dedicated address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hangar_store::IpRecord;
use ipnet::{Ipv4Net, Ipv6Net};

use super::{Edge, EdgeError};
use crate::clock;

/// Where dedicated addresses come from.
#[derive(Debug, Clone)]
pub struct Pools {
    pub v4: Ipv4Net,
    pub v6: Ipv6Net,
}

impl Default for Pools {
    fn default() -> Self {
        Pools {
            v4: Ipv4Net::new(Ipv4Addr::new(127, 0, 1, 0), 24).unwrap_or_default(),
            v6: Ipv6Net::new(Ipv6Addr::new(0xfd68, 0x616e, 0x6761, 0x72, 0, 0, 0, 0), 64)
                .unwrap_or_default(),
        }
    }
}

impl Pools {
    /// Parses the pools from CIDR text (`127.0.1.0/24`, `fd68:616e:6761:72::/64`).
    pub fn parse(v4: &str, v6: &str) -> Result<Pools, String> {
        Ok(Pools {
            v4: v4
                .parse::<Ipv4Net>()
                .map_err(|e| {
                    format!("invalid IPv4 pool {v4:?}: {e}; give a CIDR such as 127.0.1.0/24")
                })?
                .trunc(),
            v6: v6
                .parse::<Ipv6Net>()
                .map_err(|e| {
                    format!(
                        "invalid IPv6 pool {v6:?}: {e}; give a CIDR such as fd68:616e:6761:72::/64"
                    )
                })?
                .trunc(),
        })
    }
}

/// The kinds of `POST /ip_assignments` `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpKind {
    V4,
    SharedV4,
    V6,
    PrivateV6,
}

impl IpKind {
    pub fn parse(s: &str) -> Result<IpKind, EdgeError> {
        Ok(match s {
            "v4" => IpKind::V4,
            "shared_v4" => IpKind::SharedV4,
            "v6" => IpKind::V6,
            "private_v6" => IpKind::PrivateV6,
            other => {
                return Err(EdgeError::Invalid(format!(
                    "unknown IP type {other:?}: use v4, shared_v4, v6 or private_v6"
                )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IpKind::V4 => "v4",
            IpKind::SharedV4 => "shared_v4",
            IpKind::V6 => "v6",
            IpKind::PrivateV6 => "private_v6",
        }
    }
}

fn v4_candidates(net: Ipv4Net) -> impl Iterator<Item = String> {
    let (net_addr, bcast) = (net.network(), net.broadcast());
    net.hosts()
        .filter(move |a| *a != net_addr && *a != bcast)
        .map(|a| a.to_string())
}

fn v6_candidates(net: Ipv6Net) -> impl Iterator<Item = String> {
    let base = u128::from(net.network());
    (1u128..=0xffff).map(move |i| Ipv6Addr::from(base + i).to_string())
}

/// The org's private (Flycast) prefix: `fdaa:0:<org>:0:1::/80`.
fn private_candidates(org: i64) -> impl Iterator<Item = String> {
    let base = Ipv6Addr::new(0xfdaa, 0, org as u16, 0, 1, 0, 0, 0);
    let base = u128::from(base);
    (1u128..=0xffff).map(move |i| Ipv6Addr::from(base + i).to_string())
}

impl Edge {
    /// Assigns an address of `kind` to `app`.
    pub async fn allocate(
        &self,
        app: &str,
        org_id: i64,
        kind: IpKind,
        region: Option<String>,
        network: Option<String>,
        service_name: Option<String>,
    ) -> Result<IpRecord, EdgeError> {
        let template = IpRecord {
            app_name: app.to_string(),
            ip: String::new(),
            kind: kind.as_str().to_string(),
            region: region
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "global".to_string()),
            shared: kind == IpKind::SharedV4,
            network: network.filter(|n| !n.is_empty()),
            service_name: service_name.filter(|n| !n.is_empty()),
            created_at: clock::rfc3339_now(),
        };
        let record = if kind == IpKind::SharedV4 {
            let r = IpRecord {
                ip: self.shared_v4.to_string(),
                ..template
            };
            let row = r.clone();
            self.store.call(move |db| db.assign_shared_ip(&row)).await?;
            r
        } else {
            let pools = self.pools.clone();
            let assigned = self
                .store
                .call(move |db| {
                    let mut candidates: Box<dyn Iterator<Item = String>> = match kind {
                        IpKind::V4 => Box::new(v4_candidates(pools.v4)),
                        IpKind::V6 => Box::new(v6_candidates(pools.v6)),
                        _ => Box::new(private_candidates(org_id)),
                    };
                    db.assign_ip(&template, &mut candidates)
                })
                .await?;
            assigned.ok_or_else(|| {
                EdgeError::Exhausted(format!(
                    "no {} address is free; widen the pool (--ip-pool-v4 / --ip-pool-v6) or release some with `hangar ips release`",
                    kind.as_str()
                ))
            })?
        };
        tracing::info!(%app, ip = %record.ip, kind = kind.as_str(), "address assigned");
        self.caught_up().await?;
        Ok(record)
    }

    /// Releases one of `app`'s addresses; `false` when it holds no such address.
    pub async fn release(&self, app: &str, ip: &str) -> Result<bool, EdgeError> {
        let canonical = ip
            .parse::<IpAddr>()
            .map_err(|_| EdgeError::Invalid(format!("{ip:?} is not an IP address")))?
            .to_string();
        let a = app.to_string();
        let released = self
            .store
            .call(move |db| db.release_ip(&a, &canonical))
            .await?;
        if released {
            tracing::info!(%app, %ip, "address released");
            self.caught_up().await?;
        }
        Ok(released)
    }

    /// Tells the proxy which dedicated address belongs to which app (all of them, read
    /// from the store).
    pub(super) async fn publish_addresses(&self) -> Result<(), EdgeError> {
        let rows = self.store.call(|db| db.all_ips()).await?;
        let map: hangar_proxy::AppAddresses = rows
            .into_iter()
            .filter(|r| !r.shared)
            .filter_map(|r| r.ip.parse::<IpAddr>().ok().map(|ip| (ip, r.app_name)))
            .collect();
        self.addresses.send_replace(std::sync::Arc::new(map));
        Ok(())
    }

    /// Takes the IPv6 pool's local route away again, on shutdown.
    pub async fn unroute_v6_pool(&self) {
        let prefix = self.pools.v6.to_string();
        let _ = tokio::process::Command::new("ip")
            .args(["-6", "route", "del", "local", &prefix, "dev", "lo"])
            .output()
            .await;
    }

    /// Makes every address in the IPv6 pool local to this host (as root), so listeners
    /// can bind them; 127.0.0.0/8 needs nothing. [`Edge::unroute_v6_pool`] undoes it.
    pub async fn route_v6_pool(&self) {
        let prefix = self.pools.v6.to_string();
        let out = tokio::process::Command::new("ip")
            .args(["-6", "route", "replace", "local", &prefix, "dev", "lo"])
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => tracing::warn!(
                %prefix,
                error = %String::from_utf8_lossy(&o.stderr).trim(),
                "cannot make the IPv6 pool local; services on apps' IPv6 addresses will not listen"
            ),
            Err(e) => tracing::warn!(%prefix, error = %e, "cannot run ip to route the IPv6 pool"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_skip_network_and_broadcast() {
        let net: Ipv4Net = "127.0.1.0/30".parse().expect("net");
        let all: Vec<String> = v4_candidates(net).collect();
        assert_eq!(all, vec!["127.0.1.1", "127.0.1.2"]);
        let v6: Ipv6Net = "fd00::/64".parse().expect("net");
        assert_eq!(v6_candidates(v6).next().as_deref(), Some("fd00::1"));
        assert_eq!(
            private_candidates(3).next().as_deref(),
            Some("fdaa:0:3:0:1::1")
        );
    }
}
