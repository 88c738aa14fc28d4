//! What the proxy knows of machines: each instance with its state, address and services,
//! as the supervisor publishes them. Plain data; choosing among them is `route`'s job.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

/// One machine as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub machine_id: String,
    pub app: String,
    pub region: String,
    /// The machine's state (`started`, `stopped`, ...).
    pub state: String,
    pub cordoned: bool,
    /// Where the machine's services listen.
    pub address: Option<IpAddr>,
    /// What its service checks say.
    pub health: Health,
    /// When its current run began (set as it becomes `started`); `None` when not known.
    pub started_at: Option<Instant>,
    pub services: Vec<Service>,
    /// The machine on its private network; `None` when it has no 6PN address.
    pub private: Option<Arc<PrivateName>>,
}

/// A machine on its private network, and its entry in private DNS (`<app>.internal`
/// and the names under it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateName {
    /// Its 6PN address; the network is the address's `/48`.
    pub address: Ipv6Addr,
    /// Whether it is in DNS answers (`dns.skip_registration` says no).
    pub registered: bool,
    /// `fly_process_group` of its metadata (`app` when it has none).
    pub process_group: String,
    pub metadata: BTreeMap<String, String>,
}

/// The verdict of a machine's service checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Every service check passes, or it has none.
    Passing,
    /// Some check has not run yet in this run of the machine, and none fails.
    Pending,
    /// A service check fails.
    Failing,
}

/// A TCP service of a machine (`services[]` with `protocol = "tcp"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub internal_port: u16,
    /// The public ports and their handlers; none means "HTTP through the edge listeners".
    pub ports: Vec<Port>,
    /// Whether the proxy may start the machine for a request (absent counts as yes).
    pub autostart: bool,
    /// What autostop does to an idle machine.
    pub autostop: AutostopMode,
    /// Load above which a machine has no spare capacity (Fly's default: 20).
    pub soft_limit: usize,
    /// Load a machine is never given more of.
    pub hard_limit: Option<usize>,
    /// Machines autostop leaves running in the primary region.
    pub min_machines_running: usize,
}

/// `services[].ports[]`: a port (or inclusive range) and what the proxy does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub start: u16,
    pub end: u16,
    pub handlers: Vec<Handler>,
    pub force_https: bool,
    /// `proxy_proto_options.version = "v2"`.
    pub proxy_proto_v2: bool,
    /// `tls_options.alpn`.
    pub alpn: Vec<String>,
}

/// `ports[].handlers[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    Http,
    Tls,
    ProxyProto,
    /// A handler this proxy does not implement (`pg_tls`, `edge_http`); the port then
    /// passes bytes through.
    Other(String),
}

impl Handler {
    pub fn parse(name: &str) -> Handler {
        match name {
            "http" => Handler::Http,
            "tls" => Handler::Tls,
            "proxy_proto" => Handler::ProxyProto,
            other => Handler::Other(other.to_string()),
        }
    }
}

/// `services[].autostop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutostopMode {
    Off,
    Stop,
    Suspend,
}

/// How traffic reached the proxy, which decides which of a machine's services takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// The edge HTTP/HTTPS listeners: services that speak HTTP.
    Edge,
    /// A port of one of the app's own addresses.
    Port(u16),
}

impl Port {
    pub fn has(&self, h: &Handler) -> bool {
        self.handlers.contains(h)
    }

    pub fn covers(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
}

impl Service {
    /// Whether this service takes traffic that arrived through `entry`.
    pub fn takes(&self, entry: Entry) -> bool {
        match entry {
            Entry::Edge => {
                self.ports.is_empty() || self.ports.iter().any(|p| p.has(&Handler::Http))
            }
            Entry::Port(n) => self.ports.iter().any(|p| p.covers(n)),
        }
    }

    /// The port entry that `entry` arrived on, if the service declares one.
    pub fn port(&self, entry: Entry) -> Option<&Port> {
        match entry {
            Entry::Edge => self.ports.iter().find(|p| p.has(&Handler::Http)),
            Entry::Port(n) => self.ports.iter().find(|p| p.covers(n)),
        }
    }
}

impl Instance {
    /// The first service that takes traffic from `entry`.
    pub fn service_for(&self, entry: Entry) -> Option<&Service> {
        self.services.iter().find(|s| s.takes(entry))
    }

    /// Started, passing its checks, not cordoned, and reachable.
    pub fn can_serve(&self) -> bool {
        self.health == Health::Passing && self.is_up()
    }

    /// Started, not cordoned and reachable, whatever its checks say.
    pub fn is_up(&self) -> bool {
        self.state == "started" && !self.cordoned && self.address.is_some()
    }
}

/// Every known machine, by app. Each app's list is shared, so a change to one machine
/// copies only its app's list.
pub type InstanceSet = HashMap<String, Arc<Vec<Instance>>>;
