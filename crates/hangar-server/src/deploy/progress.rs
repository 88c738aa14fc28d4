//! A deploy's progress: the events it has emitted, kept in memory while the server
//! runs, and a way to wait for the next one. Streaming them over HTTP is the API's job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hangar_types::deploy::DeployEvent;
use tokio::sync::watch;

use crate::clock;

/// The progress of one deploy; cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Mutex<Vec<DeployEvent>>>,
    seq: watch::Sender<u64>,
}

impl Default for Reporter {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            seq: watch::channel(0).0,
        }
    }
}

impl Reporter {
    fn push(&self, mut e: DeployEvent) {
        let seq = {
            let Ok(mut events) = self.inner.lock() else {
                return;
            };
            e.seq = events.len() as u64 + 1;
            let seq = e.seq;
            events.push(e);
            seq
        };
        self.seq.send_replace(seq);
    }

    fn event(kind: &str, message: impl Into<String>) -> DeployEvent {
        DeployEvent {
            seq: 0,
            at: clock::now_ms(),
            kind: kind.into(),
            message: message.into(),
            machine_id: None,
            group: None,
            done: None,
            total: None,
        }
    }

    pub fn step(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(%message, "deploy");
        self.push(Self::event("step", message));
    }

    pub fn warning(&self, message: impl Into<String>) {
        self.push(Self::event("warning", message));
    }

    /// Something happened to one machine.
    pub fn machine(&self, id: &str, group: &str, message: impl Into<String>) {
        let mut e = Self::event("machine", message);
        e.machine_id = Some(id.into());
        e.group = Some(group.into());
        self.push(e);
    }

    /// `done` of `total` machines of `group` are through.
    pub fn progress(&self, group: &str, done: u32, total: u32, message: impl Into<String>) {
        let mut e = Self::event("progress", message);
        e.group = Some(group.into());
        e.done = Some(done);
        e.total = Some(total);
        self.push(e);
    }

    /// A line a machine wrote (the release command's output, a failed machine's log).
    pub fn log(&self, machine_id: &str, line: impl Into<String>) {
        let mut e = Self::event("log", line);
        e.machine_id = Some(machine_id.into());
        self.push(e);
    }

    pub fn finish(&self, ok: bool, message: impl Into<String>) {
        self.push(Self::event(if ok { "complete" } else { "failed" }, message));
    }

    /// Events after `after`, waiting for at least one when there are none yet.
    pub async fn next(&self, after: u64) -> Vec<DeployEvent> {
        let mut rx = self.seq.subscribe();
        loop {
            let events: Vec<DeployEvent> = match self.inner.lock() {
                Ok(v) => v.iter().filter(|e| e.seq > after).cloned().collect(),
                Err(_) => return Vec::new(),
            };
            if !events.is_empty() {
                return events;
            }
            if rx.changed().await.is_err() {
                return Vec::new();
            }
        }
    }
}

/// Every deploy's progress since the server started, by release id.
#[derive(Clone, Default)]
pub struct Registry {
    deploys: Arc<Mutex<HashMap<String, Reporter>>>,
    /// Apps with a deploy under way, and its release id.
    running: Arc<Mutex<HashMap<String, String>>>,
}

impl Registry {
    /// Claims the app for a deploy; the release id of the one under way if taken.
    pub fn claim(&self, app: &str, release_id: &str) -> Result<Reporter, String> {
        let mut running = self.running.lock().map_err(|_| String::new())?;
        if let Some(id) = running.get(app) {
            return Err(id.clone());
        }
        running.insert(app.into(), release_id.into());
        let r = Reporter::default();
        if let Ok(mut d) = self.deploys.lock() {
            d.insert(release_id.into(), r.clone());
        }
        Ok(r)
    }

    /// Moves the claim from a placeholder id to the release's id.
    pub fn rename(&self, app: &str, from: &str, to: &str) {
        if let Ok(mut running) = self.running.lock() {
            running.insert(app.into(), to.into());
        }
        if let Ok(mut d) = self.deploys.lock() {
            if let Some(r) = d.remove(from) {
                d.insert(to.into(), r);
            }
        }
    }

    pub fn release(&self, app: &str) {
        if let Ok(mut running) = self.running.lock() {
            running.remove(app);
        }
    }

    pub fn get(&self, release_id: &str) -> Option<Reporter> {
        self.deploys.lock().ok()?.get(release_id).cloned()
    }
}
