//! A host's WireGuard gateway: the one interface (`hangar-wg` by default) through which
//! WireGuard peers — a laptop, a CI runner — reach their org's private network, as
//! Fly's gateways do (proxy-network-services.md §2.7).
//!
//! Each peer has a `/120` in its org's `fdaa:0:<org>:ffff::/64`, outside the machines'
//! `a7b` /64 so machines route to it through their bridge's gateway. The interface is
//! the kernel's WireGuard where the host has the module, otherwise a userspace
//! `wireguard-go` on a TUN device; either way `wg` configures it. A peer may send only
//! from its own `/120` (WireGuard's allowed IPs), reach only its own org's bridge, the
//! org's resolver at `fdaa:0:<org>::3` (an address of the interface, answered by the
//! agent's DNS) and the org's Flycast addresses; nothing else on the host.
//!
//! This module knows interfaces, keys, routes and rules; which peers exist is the
//! control plane's, and the agent hands the whole set to [`Gateway::apply`].

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::{ensure_rule, io, run, NetError, Network};

/// The interface's name unless told otherwise.
pub const DEFAULT_INTERFACE: &str = "hangar-wg";
/// WireGuard's usual port, where the gateway listens unless told otherwise.
pub const DEFAULT_PORT: u16 = 51820;

/// A peer as the gateway needs it: whose it is, its key, its address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GatewayPeer {
    /// The org number of its network (`fdaa:0:<org>::/48`).
    pub org: u16,
    pub name: String,
    /// Its Curve25519 public key, base64 as `wg` writes it.
    pub public_key: String,
    /// Its address, the one given in its config's `Address`.
    pub address: Ipv6Addr,
}

/// The address of peer number `slot` of org `org`: `fdaa:0:<org>:ffff::<slot>:2`, in a
/// `/120` of its own.
pub fn peer_address(org: u16, slot: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfdaa, 0, org, 0xffff, 0, 0, slot, 2)
}

/// The peer's `/120` network, as routes and allowed IPs give it.
pub fn peer_network(address: &Ipv6Addr) -> String {
    let mut s = address.segments();
    s[7] &= 0xff00;
    format!("{}/120", Ipv6Addr::from(s))
}

/// The org's peer range, routed to the gateway's interface.
pub fn peers_prefix(org: u16) -> String {
    format!("fdaa:0:{org:x}:ffff::/64")
}

/// The org's whole private network, a peer's `AllowedIPs`.
pub fn org_network(org: u16) -> String {
    format!("fdaa:0:{org:x}::/48")
}

/// The org's resolver address, a peer's `DNS`.
pub fn org_resolver(org: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfdaa, 0, org, 0, 0, 0, 0, 3)
}

/// A Curve25519 key pair, base64 as WireGuard writes keys.
#[derive(Clone)]
pub struct Keypair {
    pub private: String,
    pub public: String,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Keypair {
    /// A new key pair from the operating system's randomness.
    pub fn generate() -> Keypair {
        let secret = x25519_dalek::StaticSecret::from(rand::random::<[u8; 32]>());
        let public = x25519_dalek::PublicKey::from(&secret);
        let b64 = base64::engine::general_purpose::STANDARD;
        Keypair {
            private: b64.encode(secret.to_bytes()),
            public: b64.encode(public.as_bytes()),
        }
    }

    /// The pair of a private key given in base64.
    pub fn from_private(private: &str) -> Option<Keypair> {
        let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode(private.trim())
            .ok()?
            .try_into()
            .ok()?;
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = x25519_dalek::PublicKey::from(&secret);
        let b64 = base64::engine::general_purpose::STANDARD;
        Some(Keypair {
            private: b64.encode(secret.to_bytes()),
            public: b64.encode(public.as_bytes()),
        })
    }
}

/// Whether `key` is a WireGuard public key: 32 bytes in base64.
pub fn is_public_key(key: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|b| b.len() == 32)
}

/// The gateway interface of this host.
pub struct Gateway {
    interface: String,
    port: u16,
    /// Holds the gateway's private key (0600), made on first use.
    key_file: PathBuf,
}

impl Gateway {
    /// The gateway on `interface` listening on UDP `port`, its key kept in `dir`.
    pub fn new(interface: &str, port: u16, dir: &Path) -> Gateway {
        Gateway {
            interface: interface.to_string(),
            port,
            key_file: dir.join("private.key"),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The gateway's key pair: kept, or made now and kept.
    pub fn keypair(&self) -> Result<Keypair, NetError> {
        if let Ok(text) = std::fs::read_to_string(&self.key_file) {
            return Keypair::from_private(&text).ok_or_else(|| {
                io(
                    format!("read the gateway key {}", self.key_file.display()),
                    std::io::Error::other(
                        "not a WireGuard private key: remove it to make a new one",
                    ),
                )
            });
        }
        let pair = Keypair::generate();
        if let Some(dir) = self.key_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(format!("create {}", dir.display()), e))?;
        }
        write_private(&self.key_file, &pair.private)?;
        Ok(pair)
    }

    /// The interface, made and keyed: the kernel's WireGuard where it works, else
    /// `wireguard-go`.
    async fn ensure_interface(&self) -> Result<(), NetError> {
        let name = self.interface.as_str();
        if run(&["ip", "link", "show", name]).await.is_err()
            && run(&["ip", "link", "add", name, "type", "wireguard"])
                .await
                .is_err()
        {
            userspace(name).await?;
        }
        self.keypair()?;
        let port = self.port.to_string();
        let key = self.key_file.display().to_string();
        run(&["wg", "set", name, "private-key", &key, "listen-port", &port])
            .await
            .map_err(|e| match e {
                NetError::Spawn { .. } => NetError::Command {
                    command: "wg set".into(),
                    stderr: "wg is not installed: apt-get install wireguard-tools".into(),
                },
                other => other,
            })?;
        run(&["ip", "link", "set", name, "up"]).await?;
        Ok(())
    }

    /// Makes the interface carry exactly `peers`: their keys and allowed IPs, a route
    /// and the rules for each org that has one, the org's resolver address.
    pub async fn apply(&self, peers: &[GatewayPeer]) -> Result<(), NetError> {
        // The host's rules first, so the gateway's are found above them.
        Network::new(PathBuf::from(crate::DEFAULT_STATE_DIR))
            .ensure_host()
            .await?;
        self.ensure_interface().await?;
        let name = self.interface.as_str();
        self.drop_the_rest().await?;
        let wanted: HashMap<&str, &GatewayPeer> =
            peers.iter().map(|p| (p.public_key.as_str(), p)).collect();
        let present = run(&["wg", "show", name, "peers"]).await?;
        for key in present.split_whitespace() {
            if !wanted.contains_key(key) {
                run(&["wg", "set", name, "peer", key, "remove"]).await?;
            }
        }
        for p in peers {
            let allowed = peer_network(&p.address);
            run(&[
                "wg",
                "set",
                name,
                "peer",
                &p.public_key,
                "allowed-ips",
                &allowed,
            ])
            .await?;
        }
        let orgs: BTreeSet<u16> = peers.iter().map(|p| p.org).collect();
        for org in &orgs {
            self.open_org(*org).await?;
        }
        Ok(())
    }

    /// Keeps one `-i <interface> -j DROP` at the end of FORWARD and INPUT: what the
    /// accepts above it do not let through goes nowhere.
    async fn drop_the_rest(&self) -> Result<(), NetError> {
        let name = self.interface.as_str();
        for chain in ["FORWARD", "INPUT"] {
            let rule = ["-i", name, "-j", "DROP"];
            // Remove every copy, then append one: the drop must stay below the accepts.
            loop {
                let mut del = vec!["ip6tables", "-w", "-t", "filter", "-D", chain];
                del.extend_from_slice(&rule);
                if run(&del).await.is_err() {
                    break;
                }
            }
            let mut add = vec!["ip6tables", "-w", "-t", "filter", "-A", chain];
            add.extend_from_slice(&rule);
            run(&add).await?;
        }
        Ok(())
    }

    /// What a peer of `org` may reach: its org's bridge (both ways), the org's resolver
    /// and Flycast addresses on this host.
    async fn open_org(&self, org: u16) -> Result<(), NetError> {
        let name = self.interface.as_str();
        let resolver = format!("{}/128", org_resolver(org));
        let shown = run(&["ip", "-6", "addr", "show", "dev", name]).await?;
        if !shown.contains(&resolver) {
            run(&["ip", "-6", "addr", "add", &resolver, "dev", name, "nodad"]).await?;
        }
        let peers = peers_prefix(org);
        run(&["ip", "-6", "route", "replace", &peers, "dev", name]).await?;
        let org48 = org_network(org);
        let bridge = format!("hangar{}", org - 1);
        let resolver_ip = org_resolver(org).to_string();
        let flycast = crate::flycast_prefix(org);
        let mut rules: Vec<(&str, Vec<&str>)> = vec![
            (
                "FORWARD",
                vec!["-i", name, "-s", &peers, "-o", &bridge, "-d", &org48],
            ),
            (
                "FORWARD",
                vec!["-i", &bridge, "-s", &org48, "-o", name, "-d", &peers],
            ),
            ("INPUT", vec!["-i", name, "-s", &peers, "-d", &flycast]),
        ];
        for proto in ["udp", "tcp"] {
            rules.push((
                "INPUT",
                vec![
                    "-i",
                    name,
                    "-s",
                    &peers,
                    "-d",
                    &resolver_ip,
                    "-p",
                    proto,
                    "--dport",
                    "53",
                ],
            ));
        }
        for (chain, mut rule) in rules {
            rule.insert(0, chain);
            rule.extend_from_slice(&["-j", "ACCEPT"]);
            ensure_rule("ip6tables", "filter", "-I", &rule).await?;
        }
        Ok(())
    }

    /// Takes the interface away (its peers, routes and addresses go with it) and the
    /// rules that named it.
    pub async fn remove(&self) -> Result<(), NetError> {
        let name = self.interface.as_str();
        let _ = run(&["ip", "link", "del", name]).await;
        for chain in ["FORWARD", "INPUT"] {
            let listed = run(&["ip6tables", "-w", "-t", "filter", "-S", chain]).await?;
            for line in listed.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                if !words
                    .windows(2)
                    .any(|w| w == ["-i", name] || w == ["-o", name])
                {
                    continue;
                }
                let mut del = vec!["ip6tables", "-w", "-t", "filter", "-D"];
                del.extend(words.iter().skip(1));
                let _ = run(&del).await;
            }
        }
        Ok(())
    }
}

/// Starts `wireguard-go` on a new TUN interface `name`; it puts itself in the
/// background once the interface is up (with its output on /dev/null: no `LOG_LEVEL`,
/// so nothing of ours is held open by the daemon).
async fn userspace(name: &str) -> Result<(), NetError> {
    let command = format!("wireguard-go {name}");
    let out = tokio::process::Command::new("wireguard-go")
        .arg(name)
        .env_remove("LOG_LEVEL")
        .env_remove("WG_PROCESS_FOREGROUND")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => NetError::Command {
                command: command.clone(),
                stderr: "this host has no WireGuard module and no wireguard-go: install wireguard-go and wireguard-tools (apt-get install wireguard-go wireguard-tools)".into(),
            },
            _ => NetError::Spawn {
                command: command.clone(),
                error,
            },
        })?;
    crate::outcome(command, out).map(|_| ())
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, key: &str) -> Result<(), NetError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io(format!("write the gateway key {}", path.display()), e))?;
    f.write_all(key.as_bytes())
        .map_err(|e| io(format!("write the gateway key {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_get_a_120_outside_the_machines_64() {
        let a = peer_address(0x18, 10);
        assert_eq!(a.to_string(), "fdaa:0:18:ffff::a:2");
        assert_eq!(peer_network(&a), "fdaa:0:18:ffff::a:0/120");
        assert_eq!(org_network(0x18), "fdaa:0:18::/48");
        assert_eq!(org_resolver(0x18).to_string(), "fdaa:0:18::3");
        assert!(peers_prefix(0x18).starts_with("fdaa:0:18:ffff::"));
    }

    #[test]
    fn keys_are_wireguards() {
        let pair = Keypair::generate();
        assert!(is_public_key(&pair.public));
        assert_eq!(
            Keypair::from_private(&pair.private).unwrap().public,
            pair.public
        );
        assert!(!is_public_key("not-a-key"));
        assert!(!format!("{pair:?}").contains(&pair.private));
        // The pair `wg genkey | wg pubkey` prints for this private key.
        let known = Keypair::from_private("kBfhxLuNHrhZUpSRMhJqPXSK29xlQ9j8rFcmUUWjnHo=").unwrap();
        assert_eq!(known.public, "A+mAO+v+uSvyxJoI6BR709q7pvQP4/i6DpV8KfdQZ1w=");
    }
}
