//! Machines the proxy is starting for traffic ("wakes"): one entry per machine, made
//! once however many requests want it started, so a burst never starts a machine twice.
//! A wake remembers when it began, whether the start was accepted, and whether the
//! machine has been seen accepting connections. A machine woken for traffic takes
//! requests as soon as its service port accepts them, before its checks have run;
//! checks take it out of rotation once they fail. This module decides nothing about
//! which machine to wake — `route` does — and never talks to the supervisor itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::instance::{Health, Instance};

/// How long a woken machine has to start accepting connections.
pub const START_WAIT: Duration = Duration::from_secs(30);

/// What became of the start request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent, not answered yet.
    Asked,
    /// The machine's actor took it: the machine is starting (or already was).
    Accepted,
    /// The start was refused or failed.
    Failed(String),
}

/// One machine being started for traffic.
pub struct Wake {
    pub machine_id: String,
    pub since: Instant,
    pub outcome: watch::Sender<Outcome>,
    /// A connection to its service port succeeded.
    accepting: watch::Sender<bool>,
    /// A waiter is trying its service port now: one at a time, however many wait.
    probing: AtomicBool,
}

impl Wake {
    pub fn outcome(&self) -> Outcome {
        self.outcome.borrow().clone()
    }

    pub fn accepting(&self) -> bool {
        *self.accepting.borrow()
    }

    pub fn set_accepting(&self) {
        self.accepting.send_replace(true);
    }

    /// Changes when the machine is seen accepting connections.
    pub fn watch_accepting(&self) -> watch::Receiver<bool> {
        self.accepting.subscribe()
    }

    /// Takes the turn to try the service port until the returned turn drops (a waiter
    /// whose client went away gives it up too); `None` while another waiter has it.
    pub fn claim_probe(&self) -> Option<ProbeTurn<'_>> {
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then_some(ProbeTurn(&self.probing))
    }

    /// The start's outcome and then the machine as it is now (`current`), in that
    /// order: a machine seen stopped after an accepted start has really stopped again,
    /// where a view taken before the outcome could merely be older than the start.
    pub fn look(&self, current: impl FnOnce(&str) -> Option<Instance>) -> Look {
        let outcome = self.outcome();
        Look {
            instance: current(&self.machine_id),
            outcome,
        }
    }

    /// Whether the wake still describes the machine: not failed, not stopped again after
    /// it started, and — once started — this run is the one the wake began (a later run
    /// started by someone else owes the proxy nothing).
    pub fn describes(&self, look: &Look) -> bool {
        let Some(i) = &look.instance else {
            return false;
        };
        match look.outcome {
            Outcome::Failed(_) => false,
            Outcome::Asked => true,
            Outcome::Accepted => match i.state.as_str() {
                "starting" => true,
                "started" => i.started_at.is_none_or(|at| at >= self.since),
                _ => false,
            },
        }
    }

    /// Whether the woken machine may take requests now: up, accepting, and not failing
    /// its checks.
    pub fn serves(&self, look: &Look) -> bool {
        self.describes(look)
            && self.accepting()
            && look
                .instance
                .as_ref()
                .is_some_and(|i| i.is_up() && i.health != Health::Failing)
    }

    /// Whether the wake is past its use: the start failed, the machine went away, or it
    /// never accepted a connection in time.
    fn finished(&self, look: &Look) -> bool {
        if !self.describes(look) {
            return true;
        }
        // Past the start wait, it matters only while its checks have not spoken.
        self.since.elapsed() > START_WAIT
            && !(self.serves(look)
                && look
                    .instance
                    .as_ref()
                    .is_some_and(|i| i.health == Health::Pending))
    }
}

/// One waiter's turn at the service port.
pub struct ProbeTurn<'a>(&'a AtomicBool);

impl Drop for ProbeTurn<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A wake's outcome and its machine, read in that order (see [`Wake::look`]).
pub struct Look {
    pub outcome: Outcome,
    pub instance: Option<Instance>,
}

/// Every wake under way, by machine.
#[derive(Default)]
pub struct Wakes {
    by_machine: Mutex<HashMap<String, Arc<Wake>>>,
}

impl Wakes {
    /// The live wakes among `ids`, each with its look (judged against the machine as
    /// `current` shows it now); finished ones are dropped.
    pub fn of<'a>(
        &self,
        ids: impl Iterator<Item = &'a str>,
        current: impl Fn(&str) -> Option<Instance>,
    ) -> HashMap<String, (Arc<Wake>, Look)> {
        let mut map = self.by_machine.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = HashMap::new();
        for id in ids {
            let Some(w) = map.get(id).cloned() else {
                continue;
            };
            let look = w.look(&current);
            if w.finished(&look) {
                map.remove(id);
            } else {
                out.insert(id.to_string(), (w, look));
            }
        }
        out
    }

    /// Begins a wake of `machine_id` unless a live one exists; `true` for the caller
    /// that must send the start.
    pub fn begin(
        &self,
        machine_id: &str,
        current: impl Fn(&str) -> Option<Instance>,
    ) -> (Arc<Wake>, bool) {
        let mut map = self.by_machine.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = map.get(machine_id) {
            if !w.finished(&w.look(&current)) {
                return (w.clone(), false);
            }
        }
        let wake = Arc::new(Wake {
            machine_id: machine_id.to_string(),
            since: Instant::now(),
            outcome: watch::channel(Outcome::Asked).0,
            accepting: watch::channel(false).0,
            probing: AtomicBool::new(false),
        });
        map.insert(machine_id.to_string(), wake.clone());
        (wake, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(state: &str, started_at: Option<Instant>) -> Instance {
        Instance {
            machine_id: "m1".into(),
            app: "a".into(),
            region: "ord".into(),
            state: state.into(),
            cordoned: false,
            address: Some([10, 0, 0, 2].into()),
            health: Health::Pending,
            started_at,
            services: Vec::new(),
            private: None,
        }
    }

    fn at(i: &Instance) -> impl Fn(&str) -> Option<Instance> + '_ {
        move |_| Some(i.clone())
    }

    #[test]
    fn one_wake_per_machine_until_it_is_over() {
        let wakes = Wakes::default();
        let stopped = machine("stopped", None);
        let (w, first) = wakes.begin("m1", at(&stopped));
        assert!(first);
        let (_, again) = wakes.begin("m1", at(&stopped));
        assert!(!again, "a second request joins the first wake");
        w.outcome.send_replace(Outcome::Accepted);
        let started = machine("started", Some(Instant::now()));
        assert!(
            !w.serves(&w.look(at(&started))),
            "not before it accepts a connection"
        );
        w.set_accepting();
        assert!(
            w.serves(&w.look(at(&started))),
            "pending checks do not hold a woken machine back"
        );
        let mut failing = started.clone();
        failing.health = Health::Failing;
        assert!(
            !w.serves(&w.look(at(&failing))),
            "failing checks take it out"
        );
        // Stopped after it started: the wake is over and the machine may be woken anew.
        assert!(!w.describes(&w.look(at(&stopped))));
        assert!(wakes.of(["m1"].into_iter(), at(&stopped)).is_empty());
        assert!(wakes.begin("m1", at(&stopped)).1);
    }

    #[test]
    fn a_view_older_than_the_answer_is_not_a_stop() {
        let wakes = Wakes::default();
        let stopped = machine("stopped", None);
        let (w, _) = wakes.begin("m1", at(&stopped));
        // The outcome is read first: asked, the machine is still shown stopped.
        let look = w.look(|_| {
            // ... and the start is accepted while the machine is read.
            w.outcome.send_replace(Outcome::Accepted);
            Some(stopped.clone())
        });
        assert!(
            w.describes(&look),
            "a view older than the answer is not a stop"
        );
    }

    #[test]
    fn one_waiter_probes_at_a_time() {
        let wakes = Wakes::default();
        let (w, _) = wakes.begin("m1", at(&machine("stopped", None)));
        let turn = w.claim_probe().expect("first turn");
        assert!(w.claim_probe().is_none(), "one at a time");
        drop(turn);
        assert!(w.claim_probe().is_some(), "given up when dropped");
    }

    #[test]
    fn a_later_run_is_not_the_wakes() {
        let wakes = Wakes::default();
        let before = Instant::now();
        let (w, _) = wakes.begin("m1", at(&machine("stopped", None)));
        w.outcome.send_replace(Outcome::Accepted);
        w.set_accepting();
        assert!(!w.serves(&w.look(at(&machine("started", Some(before))))));
        w.outcome.send_replace(Outcome::Failed("no".into()));
        assert!(!w.describes(&w.look(at(&machine("starting", None)))));
    }
}
