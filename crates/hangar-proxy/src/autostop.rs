//! Autostop, as Fly's proxy does it: every interval, per app and per region, at most
//! one machine is stopped or suspended — when more than one runs and
//! `running - (over_soft_limit + 1) >= 1`, or when the only one runs with no load —
//! never taking the primary region below `min_machines_running`. The machine chosen is
//! always one with nothing in flight or waiting on it, and never one that started less
//! than `min_age` ago: a machine woken for a request is not taken away from under it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::{AutostopMode, Instance, InstanceSet};

/// What a pass decided: stop (or suspend) this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub app: String,
    pub machine_id: String,
    pub mode: AutostopMode,
}

/// One pass over every app. `load` gives a machine's requests in flight or waiting.
pub fn pass(
    set: &InstanceSet,
    primary_region: &str,
    load: impl Fn(&str) -> usize,
    min_age: Duration,
) -> Vec<Decision> {
    let now = Instant::now();
    let settled = |m: &Instance| {
        m.started_at
            .is_none_or(|at| now.saturating_duration_since(at) >= min_age)
    };
    let mut out = Vec::new();
    for (app, machines) in set {
        let running: Vec<&Instance> = machines.iter().filter(|m| m.state == "started").collect();
        let in_primary = running
            .iter()
            .filter(|m| m.region == primary_region)
            .count();
        let mut by_region: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
        for m in &running {
            by_region.entry(m.region.as_str()).or_default().push(m);
        }
        for (region, group) in by_region {
            let stoppable: Vec<&&Instance> = group
                .iter()
                .filter(|m| m.services.iter().any(|s| s.autostop != AutostopMode::Off))
                .filter(|m| load(&m.machine_id) == 0 && settled(m))
                .collect();
            let Some(&&candidate) = stoppable
                .iter()
                .min_by_key(|m| (load(&m.machine_id), m.machine_id.clone()))
            else {
                continue;
            };
            let service = candidate
                .services
                .iter()
                .find(|s| s.autostop != AutostopMode::Off);
            let Some(service) = service else { continue };
            let over_soft = group
                .iter()
                .filter(|m| load(&m.machine_id) >= service.soft_limit)
                .count();
            // The candidate itself is idle (see `stoppable`).
            let stop = group.len() == 1 || group.len() as isize - (over_soft as isize + 1) >= 1;
            let keeps_minimum =
                region != primary_region || in_primary > service.min_machines_running;
            if stop && keeps_minimum {
                out.push(Decision {
                    app: app.clone(),
                    machine_id: candidate.machine_id.clone(),
                    mode: service.autostop,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::Service;

    fn machine(id: &str, region: &str, min: usize) -> Instance {
        Instance {
            machine_id: id.into(),
            app: "a".into(),
            region: region.into(),
            state: "started".into(),
            cordoned: false,
            address: None,
            health: crate::Health::Passing,
            started_at: None,
            private: None,
            services: vec![Service {
                ports: Vec::new(),
                internal_port: 8080,
                autostart: true,
                autostop: AutostopMode::Stop,
                soft_limit: 2,
                min_machines_running: min,
                hard_limit: None,
            }],
        }
    }

    fn set(list: Vec<Instance>) -> InstanceSet {
        [("a".to_string(), Arc::new(list))].into()
    }

    #[test]
    fn one_machine_per_region_per_pass_and_only_spare_capacity() {
        let s = set(vec![
            machine("m1", "ord", 0),
            machine("m2", "ord", 0),
            machine("m3", "ams", 0),
        ]);
        let d = pass(&s, "ord", |_| 0, Duration::ZERO);
        assert_eq!(d.len(), 2, "one in ord, the idle one in ams: {d:?}");
        // Both ord machines busy past the soft limit: no spare capacity, nothing stops.
        assert!(pass(
            &s,
            "ord",
            |id| if id == "m3" { 1 } else { 5 },
            Duration::ZERO
        )
        .is_empty());
        // One busy and one idle keep the busy one's spare: nothing stops.
        assert!(pass(
            &s,
            "ord",
            |id| if id == "m1" { 5 } else { 1 },
            Duration::ZERO
        )
        .iter()
        .all(|d| d.machine_id == "m3"));
        // One busy and two idle: one idle machine is more than the spare, and it goes.
        let s = set(vec![
            machine("m1", "ord", 0),
            machine("m2", "ord", 0),
            machine("m4", "ord", 0),
        ]);
        let d = pass(
            &s,
            "ord",
            |id| if id == "m1" { 5 } else { 0 },
            Duration::ZERO,
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].machine_id, "m2");
    }

    #[test]
    fn min_machines_running_holds_in_the_primary_region() {
        let s = set(vec![machine("m1", "ord", 1)]);
        assert!(pass(&s, "ord", |_| 0, Duration::ZERO).is_empty());
        assert_eq!(
            pass(&s, "ams", |_| 0, Duration::ZERO).len(),
            1,
            "min only counts in the primary region"
        );
    }

    #[test]
    fn never_a_machine_with_requests_waiting_or_just_started() {
        // The only machine has a request waiting on it: it stays.
        let s = set(vec![machine("m1", "ord", 0)]);
        assert!(pass(&s, "ord", |_| 1, Duration::ZERO).is_empty());
        // Two idle machines, one just started: the other goes.
        let mut young = machine("m1", "ord", 0);
        young.started_at = Some(Instant::now());
        let s = set(vec![young.clone(), machine("m2", "ord", 0)]);
        let d = pass(&s, "ord", |_| 0, Duration::from_secs(5));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].machine_id, "m2");
        // Only the young one: nothing stops before it has had its time.
        let s = set(vec![young]);
        assert!(pass(&s, "ord", |_| 0, Duration::from_secs(5)).is_empty());
        // Two machines, the idle one just started and the other busy: nothing stops.
        let mut young = machine("m1", "ord", 0);
        young.started_at = Some(Instant::now());
        let s = set(vec![young, machine("m2", "ord", 0)]);
        assert!(pass(
            &s,
            "ord",
            |id| usize::from(id == "m2"),
            Duration::from_secs(5)
        )
        .is_empty());
    }
}
