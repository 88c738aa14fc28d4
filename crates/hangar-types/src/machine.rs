//! The `Machine` object and what hangs off it: events, versions, image reference, check
//! statuses and process listings, as the Machines API returns them (machines-api.md §6).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::lease::Lease;
use crate::machine_config::MachineConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub id: String,
    pub name: String,
    pub state: String,
    pub region: String,
    pub instance_id: String,
    /// fly-go's name for `instance_id`; both are emitted.
    #[serde(default)]
    pub version: String,
    pub private_ip: String,
    pub config: MachineConfig,
    pub image_ref: ImageRef,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub events: Vec<MachineEvent>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    #[serde(default = "host_ok")]
    pub host_status: String,
    #[serde(default)]
    pub cordoned: bool,
}

fn host_ok() -> String {
    "ok".into()
}

/// The image a machine runs, split the way Fly reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub digest: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl ImageRef {
    /// Splits an image reference (`[registry/]repo[:tag][@digest]`) with Docker's rules:
    /// no registry means Docker Hub, a one-part repository lives under `library/`.
    pub fn parse(image: &str) -> ImageRef {
        let (rest, digest) = match image.split_once('@') {
            Some((r, d)) => (r, d.to_string()),
            None => (image, String::new()),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), rest.to_string()),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
            _ => (path.clone(), String::new()),
        };
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = if tag.is_empty() && digest.is_empty() {
            "latest".to_string()
        } else {
            tag
        };
        ImageRef {
            registry,
            repository,
            tag,
            digest,
            labels: BTreeMap::new(),
        }
    }
}

/// One entry of a machine's event log. `timestamp` is Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: crate::EventKind,
    pub status: String,
    pub source: String,
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "crate::omit::value")]
    pub request: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckStatus {
    pub name: String,
    pub status: crate::CheckState,
    pub output: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineVersion {
    pub version: String,
    pub user_config: MachineConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenSocket {
    pub proto: String,
    pub address: String,
}

/// One process inside a machine, as `GET …/ps` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessStat {
    pub pid: i32,
    pub stime: u64,
    pub rtime: u64,
    pub command: String,
    pub directory: String,
    pub cpu: u64,
    pub rss: u64,
    #[serde(default)]
    pub listen_sockets: Vec<ListenSocket>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs_split_like_docker() {
        let r = ImageRef::parse("nginx");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("docker.io", "library/nginx", "latest")
        );
        let r = ImageRef::parse("127.0.0.1:5000/team/app:v2");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("127.0.0.1:5000", "team/app", "v2")
        );
        let r = ImageRef::parse("registry.fly.io/app@sha256:abc");
        assert_eq!(
            (r.repository.as_str(), r.tag.as_str(), r.digest.as_str()),
            ("app", "", "sha256:abc")
        );
    }
}
