//! The private names of one network, as Fly answers them (`.internal` and `.flycast`),
//! from the machines the agent knows: which addresses or text a name stands for, or
//! that it does not exist, or that it is not a private name at all (then the resolver
//! asks upstream). Pure: the caller keeps a [`Network`] current from the live instance
//! set and asks it per query, so no lookup touches the store. Speaking DNS on the wire
//! is the server's job, not this module's.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

/// How long answers may be cached, as Fly's are.
pub const TTL: u32 = 5;

/// A machine that registers in DNS (`dns.skip_registration` ones are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub machine_id: String,
    pub app: String,
    pub region: String,
    pub process_group: String,
    pub address: Ipv6Addr,
    /// Only started machines are in the address answers.
    pub started: bool,
    pub metadata: BTreeMap<String, String>,
}

/// A WireGuard peer of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub address: Ipv6Addr,
}

/// Everything one private network's names answer from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Network {
    pub members: Vec<Member>,
    /// Each app's Flycast addresses.
    pub flycast: BTreeMap<String, Vec<Ipv6Addr>>,
    pub peers: Vec<Peer>,
    /// Apps of the network with no machine yet (their names exist, with no address).
    pub apps: Vec<String>,
    /// Members by app and every app's name, built on the first query (a network is
    /// rebuilt whole on every change, never edited after it is asked): leave it
    /// `Default`.
    pub index: NameIndex,
}

/// A network's lookup tables, filled in when it is first asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameIndex(std::sync::OnceLock<Index>);

/// What a query looks up in a network, kept so no query sorts or scans it all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Index {
    /// Each app's members, as positions in `members`.
    members_of: std::collections::HashMap<String, Vec<usize>>,
    /// Every app of the network, sorted.
    apps: Vec<String>,
}

/// The record type asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Aaaa,
    Txt,
    /// Any other type: a private name has none of it.
    Other,
}

/// What a name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Aaaa(Vec<Ipv6Addr>),
    /// One text record (Fly's lists are comma-separated in one string).
    Txt(String),
    /// The name exists but has no record of the type asked (or none right now, as an
    /// app whose machines are all stopped).
    NoData,
    /// No such private name.
    NxDomain,
    /// Not a private name: resolve it upstream.
    Elsewhere,
}

/// What a name means before the type asked is looked at.
enum Meaning {
    Addresses(Vec<Ipv6Addr>),
    Text(String),
    Missing,
    Elsewhere,
}

impl Network {
    /// The answer to `name` (any case, with or without the final dot) of type `kind`,
    /// asked from a machine in `asker_region` (what "nearest" is measured from).
    pub fn answer(&self, name: &str, kind: Kind, asker_region: Option<&str>) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let meaning = self.meaning(&name, asker_region);
        match (meaning, kind) {
            (Meaning::Elsewhere, _) => Answer::Elsewhere,
            (Meaning::Missing, _) => Answer::NxDomain,
            (Meaning::Addresses(a), Kind::Aaaa) if !a.is_empty() => Answer::Aaaa(a),
            (Meaning::Text(t), Kind::Txt) if !t.is_empty() => Answer::Txt(t),
            _ => Answer::NoData,
        }
    }

    fn index(&self) -> &Index {
        self.index.0.get_or_init(|| {
            let mut members_of: std::collections::HashMap<String, Vec<usize>> = Default::default();
            for (i, m) in self.members.iter().enumerate() {
                members_of.entry(m.app.clone()).or_default().push(i);
            }
            let mut apps: Vec<String> = members_of
                .keys()
                .cloned()
                .chain(self.apps.iter().cloned())
                .chain(self.flycast.keys().cloned())
                .collect();
            apps.sort_unstable();
            apps.dedup();
            Index { members_of, apps }
        })
    }

    fn apps(&self) -> Vec<&str> {
        self.index().apps.iter().map(String::as_str).collect()
    }

    fn has_app(&self, app: &str) -> bool {
        self.index()
            .apps
            .binary_search_by(|a| a.as_str().cmp(app))
            .is_ok()
    }

    fn meaning(&self, name: &str, asker_region: Option<&str>) -> Meaning {
        if let Some(app) = name.strip_suffix(".flycast") {
            return match self.flycast.get(app) {
                Some(addresses) => Meaning::Addresses(addresses.clone()),
                None if self.has_app(app) => Meaning::Addresses(Vec::new()),
                None => Meaning::Missing,
            };
        }
        if name == "internal" {
            return Meaning::Addresses(Vec::new());
        }
        let Some(rest) = name.strip_suffix(".internal") else {
            return Meaning::Elsewhere;
        };
        let labels: Vec<&str> = rest.split('.').collect();
        match labels.as_slice() {
            ["_apps"] => return Meaning::Text(self.apps().join(",")),
            ["_instances"] => return Meaning::Text(self.instances(true)),
            ["all", "_instances"] => return Meaning::Text(self.instances(false)),
            ["_peer"] => {
                let mut names: Vec<&str> = self
                    .peers
                    .iter()
                    .map(|p| p.name.as_str())
                    .filter(|n| !n.starts_with("interactive-"))
                    .collect();
                names.sort_unstable();
                return Meaning::Text(names.join(","));
            }
            [peer, "_peer"] => {
                return match self.peers.iter().find(|p| p.name == *peer) {
                    Some(p) => Meaning::Addresses(vec![p.address]),
                    None => Meaning::Missing,
                }
            }
            _ => {}
        }
        let Some((app, within)) = labels.split_last() else {
            return Meaning::Missing;
        };
        if !self.has_app(app) {
            return Meaning::Missing;
        }
        let of_app: Vec<&Member> = self
            .index()
            .members_of
            .get(*app)
            .map(|at| at.iter().map(|i| &self.members[*i]).collect())
            .unwrap_or_default();
        let started = |keep: &dyn Fn(&Member) -> bool| -> Meaning {
            let mut chosen: Vec<&Member> = of_app
                .iter()
                .copied()
                .filter(|m| m.started && keep(m))
                .collect();
            chosen.sort_by(|a, b| a.machine_id.cmp(&b.machine_id));
            Meaning::Addresses(chosen.iter().map(|m| m.address).collect())
        };
        match within {
            [] | ["global"] => started(&|_| true),
            ["vms"] => Meaning::Text(vms(&of_app, true)),
            ["all", "vms"] => Meaning::Text(vms(&of_app, false)),
            ["regions"] => Meaning::Text(regions(&of_app, true)),
            ["all", "regions"] => Meaning::Text(regions(&of_app, false)),
            [id, "vm"] => match of_app.iter().find(|m| m.machine_id == *id) {
                Some(_) => started(&|m| m.machine_id == *id),
                None => Meaning::Missing,
            },
            [top, "nearest", "of"] => match top.strip_prefix("top").and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => self.nearest(&of_app, n, asker_region),
                _ => Meaning::Missing,
            },
            [group, "process"] => {
                if of_app.iter().any(|m| m.process_group == *group) {
                    started(&|m| m.process_group == *group)
                } else {
                    Meaning::Missing
                }
            }
            [value, key, "kv", "_metadata"] => {
                started(&|m| m.metadata.get(*key).is_some_and(|v| v == value))
            }
            [region] if of_app.iter().any(|m| m.region == *region) => {
                started(&|m| m.region == *region)
            }
            _ => Meaning::Missing,
        }
    }

    /// `_instances.internal`: each machine as `instance=…,app=…,ip=…,region=…`, joined
    /// with `;`.
    fn instances(&self, started_only: bool) -> String {
        let mut all: Vec<&Member> = self
            .members
            .iter()
            .filter(|m| m.started || !started_only)
            .collect();
        all.sort_by(|a, b| (&a.app, &a.machine_id).cmp(&(&b.app, &b.machine_id)));
        all.iter()
            .map(|m| {
                format!(
                    "instance={},app={},ip={},region={}",
                    m.machine_id, m.app, m.address, m.region
                )
            })
            .collect::<Vec<_>>()
            .join(";")
    }

    /// The `n` started machines nearest the asker: its own region's first, then the
    /// others' (by region code, as this network has no latency map).
    fn nearest(&self, of_app: &[&Member], n: usize, asker_region: Option<&str>) -> Meaning {
        let mut chosen: Vec<&Member> = of_app.iter().copied().filter(|m| m.started).collect();
        chosen.sort_by(|a, b| {
            let far = |m: &Member| Some(m.region.as_str()) != asker_region;
            (far(a), &a.region, &a.machine_id).cmp(&(far(b), &b.region, &b.machine_id))
        });
        chosen.truncate(n);
        Meaning::Addresses(chosen.iter().map(|m| m.address).collect())
    }
}

fn vms(of_app: &[&Member], started_only: bool) -> String {
    let mut pairs: Vec<String> = of_app
        .iter()
        .filter(|m| m.started || !started_only)
        .map(|m| format!("{} {}", m.machine_id, m.region))
        .collect();
    pairs.sort_unstable();
    pairs.join(",")
}

fn regions(of_app: &[&Member], started_only: bool) -> String {
    let mut regions: Vec<&str> = of_app
        .iter()
        .filter(|m| m.started || !started_only)
        .map(|m| m.region.as_str())
        .collect();
    regions.sort_unstable();
    regions.dedup();
    regions.join(",")
}

#[cfg(test)]
mod tests;
