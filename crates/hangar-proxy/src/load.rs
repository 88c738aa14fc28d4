//! Load: how many requests (or connections) each machine has right now, counted from
//! the moment the proxy picks the machine — including while the request waits for the
//! machine to start — until the machine's answer has been passed on whole. Routing
//! reads it against soft and hard limits, autostop to judge spare capacity, and a
//! draining stop waits for it to reach zero. Requests queued at a hard limit wait on
//! [`Load::released`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Load {
    in_flight: Mutex<HashMap<String, usize>>,
    /// Requests waiting for a machine to fall under its hard limit.
    queued: AtomicUsize,
    released: Notify,
}

/// Counts one request while it lives.
pub struct LoadGuard {
    load: Arc<Load>,
    machine_id: String,
}

impl std::fmt::Debug for LoadGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadGuard")
            .field("machine_id", &self.machine_id)
            .finish()
    }
}

impl Load {
    /// Counts a request against the machine, whatever its limit.
    pub fn enter(self: &Arc<Self>, machine_id: &str) -> LoadGuard {
        self.try_enter(machine_id, None)
            .expect("a request without a limit is always counted")
    }

    /// Counts a request against the machine unless that would take it past `limit`.
    pub fn try_enter(
        self: &Arc<Self>,
        machine_id: &str,
        limit: Option<usize>,
    ) -> Option<LoadGuard> {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(machine_id.to_string()).or_default();
        if limit.is_some_and(|l| *n >= l) {
            if *n == 0 {
                map.remove(machine_id);
            }
            return None;
        }
        *n += 1;
        Some(LoadGuard {
            load: self.clone(),
            machine_id: machine_id.to_string(),
        })
    }

    /// Requests the machine has now.
    pub fn of(&self, machine_id: &str) -> usize {
        let map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        map.get(machine_id).copied().unwrap_or(0)
    }

    /// Marks the caller as queued until the returned guard drops, so releases wake it.
    pub(crate) fn queue(self: &Arc<Self>) -> QueuedGuard {
        self.queued.fetch_add(1, Ordering::SeqCst);
        QueuedGuard { load: self.clone() }
    }

    /// Completes when some request is released (only while someone is queued).
    pub(crate) fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }
}

/// A request waiting at a hard limit.
pub(crate) struct QueuedGuard {
    load: Arc<Load>,
}

impl Drop for QueuedGuard {
    fn drop(&mut self) {
        self.load.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        {
            let mut map = self
                .load
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&self.machine_id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.machine_id);
                }
            }
        }
        if self.load.queued.load(Ordering::SeqCst) > 0 {
            self.load.released.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_is_never_passed_and_leaving_frees_a_place() {
        let load = Arc::new(Load::default());
        let a = load.try_enter("m", Some(2)).expect("first");
        let _b = load.try_enter("m", Some(2)).expect("second");
        assert!(
            load.try_enter("m", Some(2)).is_none(),
            "a third passes the limit"
        );
        assert_eq!(load.of("m"), 2);
        drop(a);
        assert_eq!(load.of("m"), 1);
        assert!(load.try_enter("m", Some(2)).is_some());
        assert!(load.try_enter("idle", Some(0)).is_none());
        assert_eq!(load.of("idle"), 0);
    }
}
