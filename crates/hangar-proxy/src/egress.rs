//! Bytes sent out through the proxy, per app: machines' answers and the bytes spliced
//! from machines to clients. A response looks up its app's counter once and adds each
//! frame to it without a lock; the server takes the totals to meter them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Egress {
    by_app: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl Egress {
    /// The app's counter.
    pub fn counter(&self, app: &str) -> Arc<AtomicU64> {
        let mut map = self.by_app.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(app.to_string()).or_default().clone()
    }

    /// The bytes counted per app since the last take, leaving the counters at zero.
    pub fn take(&self) -> Vec<(String, u64)> {
        let map = self.by_app.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(app, n)| (app.clone(), n.swap(0, Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The bytes counted per app since the last take, leaving them counted.
    pub fn peek(&self) -> Vec<(String, u64)> {
        let map = self.by_app.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(app, n)| (app.clone(), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Puts back bytes that could not be recorded, to be taken again.
    pub fn give_back(&self, app: &str, bytes: u64) {
        self.counter(app).fetch_add(bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_leave_zero() {
        let e = Egress::default();
        e.counter("a").fetch_add(10, Ordering::Relaxed);
        e.counter("a").fetch_add(5, Ordering::Relaxed);
        assert_eq!(e.take(), vec![("a".to_string(), 15)]);
        assert!(e.take().is_empty());
        e.give_back("a", 3);
        assert_eq!(e.take(), vec![("a".to_string(), 3)]);
    }
}
