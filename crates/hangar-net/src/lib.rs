//! Private networking of machines, in the 6PN style (proxy-network-services.md §2).
//!
//! Each machine gets a network namespace (`/run/netns/hangar-<machine>`) with one
//! interface, `eth0`, the far end of a veth whose near end sits in its org's bridge
//! (`hangar0` for the first org, `hangar1` for the next, ...). `eth0` carries the
//! machine's 6PN address (in the org's `fdaa:0:<org>:a7b::/64`) and a private IPv4
//! address (in `172.19.<org - 1>.0/24`), with the bridge as default gateway. Traffic
//! leaving for anything but a Hangar bridge is masqueraded; traffic between two orgs'
//! bridges is dropped, so orgs cannot reach each other.
//!
//! This crate shells out to iproute2 and iptables; it knows addresses and interfaces,
//! not machines' lifecycles (the runtime driver calls it).

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use tokio::process::Command;
use tokio::sync::Mutex;
use tracing::debug;

pub mod resolver;
pub mod wireguard;

pub use resolver::{resolver_addresses, ResolverSockets, RESOLVER};
const IPV4_BLOCK: &str = "172.19.0.0/16";
const IPV6_BLOCK: &str = "fdaa::/16";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run {command}: {error} (is iproute2/iptables installed?)")]
    Spawn {
        command: String,
        error: std::io::Error,
    },
    #[error("invalid private address {0:?}: expected a 6PN address under fdaa:0:<org>::/48")]
    Address(String),
    #[error("the org's private IPv4 network is full (253 machines)")]
    Exhausted,
    #[error("{context}: {error}")]
    Io {
        context: String,
        error: std::io::Error,
    },
}

/// A machine's place on the private network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The network namespace to run the machine in.
    pub netns: PathBuf,
    pub ipv6: String,
    pub ipv4: String,
    pub bridge: String,
}

/// The org's Flycast prefix, `fdaa:0:<org>:0:1::/80`: private addresses of its apps
/// that lead through the proxy.
pub fn flycast_prefix(org: u16) -> String {
    format!("fdaa:0:{org:x}:0:1::/80")
}

/// The org index and /64 of a 6PN address `fdaa:0:<org>:a7b:...`.
pub fn org_of(ipv6: &str) -> Result<(u16, [u16; 4]), NetError> {
    let addr: Ipv6Addr = ipv6.parse().map_err(|_| NetError::Address(ipv6.into()))?;
    let s = addr.segments();
    if s[0] != 0xfdaa || s[2] == 0 || s[2] > 255 {
        return Err(NetError::Address(ipv6.into()));
    }
    Ok((s[2], [s[0], s[1], s[2], s[3]]))
}

fn prefix64(p: [u16; 4]) -> String {
    format!("{:x}:{:x}:{:x}:{:x}", p[0], p[1], p[2], p[3])
}

fn io(context: impl Into<String>, error: std::io::Error) -> NetError {
    NetError::Io {
        context: context.into(),
        error,
    }
}

async fn run(args: &[&str]) -> Result<String, NetError> {
    let command = args.join(" ");
    debug!(%command, "net");
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .await
        .map_err(|error| NetError::Spawn {
            command: command.clone(),
            error,
        })?;
    outcome(command, out)
}

/// What a finished command printed, or why it failed.
fn outcome(command: String, out: std::process::Output) -> Result<String, NetError> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs `args` with `input` on its standard input (for `ip -batch -`).
async fn run_batch(args: &[&str], input: &str) -> Result<(), NetError> {
    use tokio::io::AsyncWriteExt;
    let command = format!("{} <<< {input:?}", args.join(" "));
    debug!(%command, "net");
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| NetError::Spawn {
            command: command.clone(),
            error,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|e| io("write ip batch", e))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| io("run ip batch", e))?;
    outcome(command, out).map(|_| ())
}

/// Adds an iptables rule unless it is there (`-C` finds it).
async fn ensure_rule(tool: &str, table: &str, action: &str, rule: &[&str]) -> Result<(), NetError> {
    let mut check = vec![tool, "-w", "-t", table, "-C"];
    check.extend_from_slice(rule);
    if run(&check).await.is_ok() {
        return Ok(());
    }
    let mut add = vec![tool, "-w", "-t", table, action];
    add.extend_from_slice(rule);
    run(&add).await.map(|_| ())
}

/// Where address allocations live by default: host-wide, like the network namespaces
/// and bridges they go with.
pub const DEFAULT_STATE_DIR: &str = "/run/hangar/net";

/// How long an address claim may go without its machine's namespace before another
/// attach takes the address back (an attach makes the namespace well within this).
const CLAIM_SETTLES: std::time::Duration = std::time::Duration::from_secs(30);

/// The machines' private network on this host.
pub struct Network {
    /// Where address allocations are kept (see [`DEFAULT_STATE_DIR`]).
    dir: PathBuf,
    /// Bridges (and the host setup, as `""`) made ready by this process, so a start pays
    /// only for the machine's own interfaces.
    ready: Mutex<std::collections::HashSet<String>>,
}

impl Network {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            ready: Mutex::new(Default::default()),
        }
    }

    pub fn netns_name(machine_id: &str) -> String {
        format!("hangar-{machine_id}")
    }

    /// Host-wide setup: forwarding, outbound NAT, and no forwarding between bridges.
    pub async fn ensure_host(&self) -> Result<(), NetError> {
        for (key, path) in [
            ("ipv4 forwarding", "/proc/sys/net/ipv4/ip_forward"),
            ("ipv6 forwarding", "/proc/sys/net/ipv6/conf/all/forwarding"),
        ] {
            if std::fs::read_to_string(path)
                .map(|v| v.trim() != "1")
                .unwrap_or(true)
            {
                std::fs::write(path, "1").map_err(|e| io(format!("enable {key}"), e))?;
            }
        }
        ensure_rule(
            "iptables",
            "nat",
            "-A",
            &[
                "POSTROUTING",
                "-s",
                IPV4_BLOCK,
                "!",
                "-o",
                "hangar+",
                "-j",
                "MASQUERADE",
            ],
        )
        .await?;
        ensure_rule(
            "ip6tables",
            "nat",
            "-A",
            &[
                "POSTROUTING",
                "-s",
                IPV6_BLOCK,
                "!",
                "-o",
                "hangar+",
                "-j",
                "MASQUERADE",
            ],
        )
        .await?;
        for tool in ["iptables", "ip6tables"] {
            ensure_rule(
                tool,
                "filter",
                "-I",
                &["FORWARD", "-i", "hangar+", "-o", "hangar+", "-j", "DROP"],
            )
            .await?;
        }
        Ok(())
    }

    /// The org's bridge, with its gateway addresses; created on first use.
    async fn ensure_bridge(&self, org: u16, p64: [u16; 4]) -> Result<String, NetError> {
        let name = format!("hangar{}", org - 1);
        if run(&["ip", "link", "show", &name]).await.is_err() {
            run(&["ip", "link", "add", &name, "type", "bridge"]).await?;
        }
        let gw4 = format!("172.19.{}.1/24", org - 1);
        let gw6 = format!("{}::1/64", prefix64(p64));
        let addrs = run(&["ip", "addr", "show", "dev", &name]).await?;
        if !addrs.contains(&gw4) {
            run(&["ip", "addr", "add", &gw4, "dev", &name]).await?;
        }
        if !addrs.contains(&gw6) {
            run(&["ip", "-6", "addr", "add", &gw6, "dev", &name, "nodad"]).await?;
        }
        run(&["ip", "link", "set", &name, "up"]).await?;
        // The org's Flycast addresses are this host's (the proxy listens on them), and
        // only the org's own machines may reach them.
        let flycast = flycast_prefix(org);
        run(&[
            "ip", "-6", "route", "replace", "local", &flycast, "dev", "lo",
        ])
        .await?;
        let org48 = format!("fdaa:0:{org:x}::/48");
        ensure_rule(
            "ip6tables",
            "filter",
            "-I",
            &[
                "INPUT", "-i", "hangar+", "-d", &flycast, "!", "-s", &org48, "-j", "DROP",
            ],
        )
        .await?;
        // Machines on one bridge may talk (if bridged traffic is filtered at all).
        for tool in ["iptables", "ip6tables"] {
            ensure_rule(
                tool,
                "filter",
                "-I",
                &["FORWARD", "-i", &name, "-o", &name, "-j", "ACCEPT"],
            )
            .await?;
        }
        Ok(name)
    }

    fn machine_file(&self, machine_id: &str) -> PathBuf {
        self.dir.join("machines").join(machine_id)
    }

    /// The machine's IPv4 address in the org's /24: kept, or the lowest free one. A
    /// claim is live while its machine's network namespace exists, so addresses of
    /// machines that vanished without a detach are reused.
    fn allocate_ipv4(&self, machine_id: &str, org: u16) -> Result<String, NetError> {
        let kept = self.machine_file(machine_id);
        if let Ok(addr) = std::fs::read_to_string(&kept) {
            return Ok(addr.trim().to_string());
        }
        let pool = self.dir.join("ipv4");
        for d in [&pool, &self.dir.join("machines")] {
            std::fs::create_dir_all(d).map_err(|e| io(format!("create {}", d.display()), e))?;
        }
        for host in 2..=254u8 {
            let addr = format!("172.19.{}.{host}", org - 1);
            let claim = pool.join(&addr);
            if let Ok(owner) = std::fs::read_to_string(&claim) {
                let live = Path::new("/run/netns")
                    .join(Self::netns_name(owner.trim()))
                    .exists();
                // A claim younger than an attach takes may belong to a machine another
                // server on this host is attaching right now (its namespace comes a
                // moment after its claim): only an old claim without one is stale.
                let fresh = std::fs::metadata(&claim)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_none_or(|age| age < CLAIM_SETTLES);
                if live || fresh || owner.trim() == machine_id {
                    continue;
                }
                let _ = std::fs::remove_file(&claim);
                let _ = std::fs::remove_file(self.machine_file(owner.trim()));
            }
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&claim)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    f.write_all(machine_id.as_bytes())
                        .map_err(|e| io("record address", e))?;
                    std::fs::write(&kept, &addr).map_err(|e| io("record address", e))?;
                    return Ok(addr);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io("claim address", e)),
            }
        }
        Err(NetError::Exhausted)
    }

    /// Puts the machine on its org's private network; idempotent.
    pub async fn attach(&self, machine_id: &str, ipv6: &str) -> Result<Attachment, NetError> {
        let (org, p64) = org_of(ipv6)?;
        let mut ready = self.ready.lock().await;
        if !ready.contains("") {
            self.ensure_host().await?;
            ready.insert(String::new());
        }
        let bridge = format!("hangar{}", org - 1);
        if !ready.contains(&bridge) {
            self.ensure_bridge(org, p64).await?;
            ready.insert(bridge.clone());
        }
        let ipv4 = self.allocate_ipv4(machine_id, org)?;
        let ns = Self::netns_name(machine_id);
        let netns = Path::new("/run/netns").join(&ns);
        let attachment = Attachment {
            netns: netns.clone(),
            ipv6: ipv6.to_string(),
            ipv4: ipv4.clone(),
            bridge: bridge.clone(),
        };
        if netns.exists()
            && run(&["ip", "-n", &ns, "addr", "show", "dev", "eth0"])
                .await
                .is_ok_and(|a| a.contains(ipv6))
        {
            return Ok(attachment);
        }
        let _ = run(&["ip", "netns", "del", &ns]).await;
        // Interface names hold 15 bytes: one letter and the 14-character machine ID.
        let short = &machine_id[..machine_id.len().min(14)];
        let (host_if, peer_if) = (format!("h{short}"), format!("p{short}"));
        let _ = run(&["ip", "link", "del", &host_if]).await;
        // Two `ip -batch` runs instead of a dozen `ip` processes: this is on the start path.
        // An address freed by a destroyed machine may be reused at once: forget the old
        // machine's MAC, or the host sends it the new one's traffic until the neighbour
        // entry ages out (seconds of silence for the proxy).
        let host = format!(
            "neigh flush to {ipv4} dev {bridge}\nnetns add {ns}\nlink add {host_if} type veth peer name {peer_if} netns {ns}\nlink set {host_if} master {bridge} up\n"
        );
        let inside = format!(
            "link set {peer_if} name eth0\nlink set lo up\n{resolver}addr add {ipv4}/24 dev eth0\naddr add {ipv6}/64 dev eth0 nodad\n\
             link set eth0 up\nroute add default via 172.19.{o}.1\nroute add default via {p}::1\n",
            o = org - 1,
            p = prefix64(p64),
            resolver = resolver_addresses(org)
                .iter()
                .map(|a| format!("addr add {a}/128 dev lo nodad\n"))
                .collect::<String>(),
        );
        let setup = async {
            run_batch(&["ip", "-batch", "-"], &host).await?;
            run_batch(&["ip", "-n", &ns, "-batch", "-"], &inside).await
        };
        if let Err(e) = setup.await {
            let _ = run(&["ip", "netns", "del", &ns]).await;
            let _ = run(&["ip", "link", "del", &host_if]).await;
            return Err(e);
        }
        Ok(attachment)
    }

    /// The machine's IPv4 address, once it has one.
    pub fn ipv4_of(&self, machine_id: &str) -> Option<std::net::IpAddr> {
        std::fs::read_to_string(self.machine_file(machine_id))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Takes the machine off the network and frees its address.
    pub async fn detach(&self, machine_id: &str) -> Result<(), NetError> {
        let _guard = self.ready.lock().await;
        let ns = Self::netns_name(machine_id);
        if Path::new("/run/netns").join(&ns).exists() {
            run(&["ip", "netns", "del", &ns]).await?;
        }
        let kept = self.machine_file(machine_id);
        if let Ok(addr) = std::fs::read_to_string(&kept) {
            let _ = std::fs::remove_file(self.dir.join("ipv4").join(addr.trim()));
            let _ = std::fs::remove_file(&kept);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_and_prefix_come_from_the_6pn_address() {
        let (org, p) = org_of("fdaa:0:1:a7b:66e4:dcf0:13a8:2").unwrap();
        assert_eq!(org, 1);
        assert_eq!(prefix64(p), "fdaa:0:1:a7b");
        assert!(org_of("fd00::1").is_err());
        assert!(org_of("not an address").is_err());
    }
}

/// Needs root, iproute2, iptables and busybox (for ping); skips elsewhere, never in CI.
#[cfg(test)]
mod host_tests {
    use super::*;

    fn can_run() -> bool {
        let ok = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        }) && Path::new("/bin/busybox").exists();
        assert!(
            ok || std::env::var_os("CI").is_none(),
            "network tests cannot run in CI: need root and busybox"
        );
        ok
    }

    /// A ping answered within `tries` (the first may wait for neighbour discovery).
    async fn reaches(from: &str, addr: &str, tries: u32) -> bool {
        let ns = Network::netns_name(from);
        for _ in 0..tries {
            if run(&[
                "ip", "netns", "exec", &ns, "busybox", "ping", "-c", "1", "-W", "1", addr,
            ])
            .await
            .is_ok()
            {
                return true;
            }
        }
        false
    }

    #[tokio::test]
    async fn orgs_are_isolated_and_machines_of_one_org_reach_each_other() {
        if !can_run() {
            eprintln!("skipping: needs root and busybox");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let net = Network::new(dir.path().to_path_buf());
        let ids = ["netta0000000a1", "netta0000000a2", "nettb0000000b1"];
        let a1 = net.attach(ids[0], "fdaa:0:c8:a7b:1:1:1:2").await.unwrap();
        let a2 = net.attach(ids[1], "fdaa:0:c8:a7b:2:2:2:2").await.unwrap();
        let b1 = net.attach(ids[2], "fdaa:0:c9:a7b:3:3:3:2").await.unwrap();
        assert_eq!(
            net.attach(ids[0], "fdaa:0:c8:a7b:1:1:1:2").await.unwrap(),
            a1,
            "idempotent"
        );
        assert_eq!(
            (a1.bridge.as_str(), b1.bridge.as_str()),
            ("hangar199", "hangar200")
        );
        assert_ne!(a1.ipv4, a2.ipv4);
        assert!(reaches(ids[0], &a2.ipv6, 3).await, "same org, 6PN");
        assert!(reaches(ids[0], &a2.ipv4, 3).await, "same org, IPv4");
        assert!(!reaches(ids[0], &b1.ipv6, 1).await, "other org, 6PN");
        assert!(!reaches(ids[0], &b1.ipv4, 1).await, "other org, IPv4");
        assert!(
            !reaches(ids[2], &a1.ipv6, 1).await,
            "other org, the other way"
        );
        for id in ids {
            net.detach(id).await.unwrap();
            assert!(!Path::new("/run/netns")
                .join(Network::netns_name(id))
                .exists());
        }
        for bridge in ["hangar199", "hangar200"] {
            let _ = run(&["ip", "link", "del", bridge]).await;
        }
    }
}
