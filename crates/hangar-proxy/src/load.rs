//! Load: how many requests each machine is serving right now, counted from the moment
//! the proxy sends a request until the machine's answer has been passed on whole.
//! Autostop reads it to judge spare capacity.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Load {
    in_flight: Mutex<HashMap<String, usize>>,
}

/// Counts one request while it lives.
pub struct LoadGuard {
    load: Arc<Load>,
    machine_id: String,
}

impl Load {
    pub fn enter(self: &Arc<Self>, machine_id: &str) -> LoadGuard {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(machine_id.to_string()).or_default() += 1;
        LoadGuard {
            load: self.clone(),
            machine_id: machine_id.to_string(),
        }
    }

    /// Requests the machine is serving now.
    pub fn of(&self, machine_id: &str) -> usize {
        let map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        map.get(machine_id).copied().unwrap_or(0)
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
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
}
