//! Placement: which host runs a new machine. Every host an agent runs on is known here
//! with its region and size (the embedded agent's host from the start, an agent of its
//! own once it registers); a machine goes to a host in the region it asks for with room
//! for its memory, the one with the most room first. A region no host is in falls back
//! to any host with room, so a `fly.toml` written for Fly's regions deploys unchanged on
//! a one-host install (the machine keeps the region it asked for). No host with room is
//! Fly's 503 `insufficient_capacity`.
//!
//! What machines hold is summed from the store (machines that are not stopped, failed or
//! gone); the store does not yet record which host a machine is on, so with more than one
//! host the sum is the fleet's, which is right while the control plane drives one agent.
//! Choosing and recording a machine happen under one turn, so two creates cannot both
//! take the last room.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;

use hangar_agent::host::HostCapacity;

/// How long a placement waits for a first host to register.
const HOST_WAIT: Duration = Duration::from_secs(10);

/// A host machines can run on.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// Its lasting id (`hangar_agent::host::host_id`).
    pub id: String,
    pub region: String,
    pub capacity: HostCapacity,
}

/// Why no host can take a machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error(
        "could not reserve resource for machine: insufficient memory available to fulfill \
         request ({want_mb} MB asked, {free_mb} MB free of {total_mb} MB on the best host); \
         stop or destroy machines, choose a smaller guest, or raise --memory-overcommit"
    )]
    Memory {
        want_mb: u64,
        free_mb: u64,
        total_mb: u64,
    },
    #[error("no host has registered with the control plane yet: start `hangar agent --control URL` on a host")]
    NoHost,
}

/// The hosts placement chooses among, and the turn creates take.
pub struct Placement {
    hosts: watch::Sender<BTreeMap<String, Host>>,
    /// How much of a host's memory machines may be given, as a ratio (1.0: all of it).
    overcommit: f64,
    turn: tokio::sync::Mutex<()>,
    /// Each host's agent process as last heard (a new one has mounted its volumes
    /// afresh, without their keys).
    runs: std::sync::Mutex<BTreeMap<String, String>>,
}

impl Placement {
    pub fn new(overcommit: f64) -> Placement {
        Placement {
            hosts: watch::channel(BTreeMap::new()).0,
            overcommit,
            turn: tokio::sync::Mutex::new(()),
            runs: std::sync::Mutex::default(),
        }
    }

    /// Notes that host `id` runs the agent process `run`; true when that is news (the
    /// host is new to this control plane or its agent restarted).
    pub fn agent_run(&self, id: &str, run: &str) -> bool {
        let Ok(mut runs) = self.runs.lock() else {
            return true;
        };
        runs.insert(id.to_string(), run.to_string()).as_deref() != Some(run)
    }

    /// Records a host (again): its region and size as its agent last said.
    pub fn host_seen(&self, host: Host) {
        self.hosts.send_modify(|hosts| {
            hosts.insert(host.id.clone(), host);
        });
    }

    /// Waits a moment for a first host (an agent of its own registers within seconds
    /// of a start); placement refuses afterwards if none came.
    pub async fn wait_for_a_host(&self) {
        let mut rx = self.hosts.subscribe();
        let _ = tokio::time::timeout(HOST_WAIT, rx.wait_for(|h| !h.is_empty())).await;
    }

    /// Held while a machine is chosen a host and recorded (after a first host is
    /// known, or the wait for one is over).
    pub async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.wait_for_a_host().await;
        self.turn.lock().await
    }

    /// Checks that the host with `id` has room for `want_mb` (a machine that must run
    /// beside its volume).
    pub fn choose_host(
        &self,
        id: &str,
        want_mb: u64,
        held_mb: u64,
    ) -> Result<Host, PlacementError> {
        let hosts = self.hosts.borrow();
        let host = hosts.get(id).ok_or(PlacementError::NoHost)?;
        choose(&[host], &host.region, want_mb, held_mb, self.overcommit).cloned()
    }

    /// The host for a machine of `want_mb` in `region`, given what machines hold.
    pub fn choose(&self, region: &str, want_mb: u64, held_mb: u64) -> Result<Host, PlacementError> {
        let hosts = self.hosts.borrow();
        let hosts: Vec<&Host> = hosts.values().collect();
        choose(&hosts, region, want_mb, held_mb, self.overcommit).cloned()
    }
}

/// Room on `host` for machines, in MB, after `held_mb`.
fn room(host: &Host, held_mb: u64, overcommit: f64) -> (u64, u64) {
    let total = (host.capacity.memory_mb as f64 * overcommit).floor() as u64;
    (total.saturating_sub(held_mb), total)
}

fn choose<'a>(
    hosts: &[&'a Host],
    region: &str,
    want_mb: u64,
    held_mb: u64,
    overcommit: f64,
) -> Result<&'a Host, PlacementError> {
    let in_region: Vec<&'a Host> = hosts
        .iter()
        .copied()
        .filter(|h| h.region == region)
        .collect();
    let candidates = if in_region.is_empty() {
        hosts.to_vec()
    } else {
        in_region
    };
    let ((free_mb, total_mb), best) = candidates
        .into_iter()
        .map(|h| (room(h, held_mb, overcommit), h))
        .max_by_key(|((free, _), _)| *free)
        .ok_or(PlacementError::NoHost)?;
    if free_mb >= want_mb {
        Ok(best)
    } else {
        Err(PlacementError::Memory {
            want_mb,
            free_mb,
            total_mb,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, region: &str, memory_mb: u64) -> Host {
        Host {
            id: id.into(),
            region: region.into(),
            capacity: HostCapacity { cpus: 2, memory_mb },
        }
    }

    #[test]
    fn a_host_in_the_region_with_room_is_chosen() {
        let (a, b) = (host("a", "ams", 4096), host("b", "ord", 8192));
        let hosts = [&a, &b];
        assert_eq!(choose(&hosts, "ams", 1024, 0, 1.0).unwrap().id, "a");
        assert_eq!(choose(&hosts, "ord", 1024, 0, 1.0).unwrap().id, "b");
    }

    #[test]
    fn a_region_no_host_is_in_falls_back_to_the_roomiest_host() {
        let (a, b) = (host("a", "local", 4096), host("b", "local", 8192));
        assert_eq!(choose(&[&a, &b], "iad", 256, 0, 1.0).unwrap().id, "b");
    }

    #[test]
    fn a_full_region_is_refused_rather_than_moved() {
        let (a, b) = (host("a", "ams", 1024), host("b", "ord", 8192));
        let err = choose(&[&a, &b], "ams", 2048, 0, 1.0).unwrap_err();
        assert_eq!(
            err,
            PlacementError::Memory {
                want_mb: 2048,
                free_mb: 1024,
                total_mb: 1024
            }
        );
        assert!(err
            .to_string()
            .starts_with("could not reserve resource for machine"));
    }

    #[test]
    fn what_machines_hold_and_the_overcommit_count() {
        let a = host("a", "local", 1024);
        assert!(choose(&[&a], "local", 256, 768, 1.0).is_ok());
        assert!(choose(&[&a], "local", 512, 768, 1.0).is_err());
        assert!(choose(&[&a], "local", 512, 768, 2.0).is_ok());
    }

    #[test]
    fn no_host_says_how_to_get_one() {
        assert_eq!(
            choose(&[], "local", 256, 0, 1.0),
            Err(PlacementError::NoHost)
        );
    }
}
