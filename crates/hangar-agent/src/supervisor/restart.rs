//! Restart policy decisions (machines-api.md §7.5): `no`, `always`, and `on-failure`
//! with `max_retries` restarts within a 5-minute window. Requested stops never restart.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hangar_types::machine_config::RestartPolicy;

/// The window in which `on-failure` counts restarts.
pub const WINDOW: Duration = Duration::from_secs(300);

/// Remembers recent automatic restarts of one machine.
#[derive(Debug, Default)]
pub struct RestartTracker {
    recent: VecDeque<Instant>,
}

impl RestartTracker {
    /// Restarts counted in the window ending at `now`.
    pub fn count(&mut self, now: Instant) -> u32 {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.len() as u32
    }

    /// Whether an unrequested exit should restart the machine; records the restart.
    pub fn should_restart(&mut self, policy: RestartPolicy, success: bool, now: Instant) -> bool {
        let count = self.count(now);
        let restart = match policy {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure { max_retries } => !success && count < max_retries,
        };
        if restart {
            self.recent.push_back(now);
        }
        restart
    }

    /// How long to wait before the next restart: immediate at first, then doubling from
    /// 100 ms up to 10 s so a crash loop does not spin.
    pub fn backoff(&mut self, now: Instant) -> Duration {
        match self.count(now) {
            0..=2 => Duration::ZERO,
            n => Duration::from_millis(100u64 << (n - 3).min(7)).min(Duration::from_secs(10)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_failure_gives_up_after_max_retries_in_the_window() {
        let mut t = RestartTracker::default();
        let now = Instant::now();
        let policy = RestartPolicy::OnFailure { max_retries: 2 };
        assert!(
            !t.should_restart(policy, true, now),
            "clean exit does not restart"
        );
        assert!(t.should_restart(policy, false, now));
        assert!(t.should_restart(policy, false, now));
        assert!(!t.should_restart(policy, false, now));
        assert!(t.should_restart(policy, false, now + WINDOW + Duration::from_secs(1)));
    }

    #[test]
    fn always_and_no() {
        let mut t = RestartTracker::default();
        let now = Instant::now();
        assert!(t.should_restart(RestartPolicy::Always, true, now));
        assert!(!t.should_restart(RestartPolicy::No, false, now));
    }
}
