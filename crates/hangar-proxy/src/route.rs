//! Choosing the machine for a request or connection, as Fly's proxy does: started,
//! passing, uncordoned machines whose services take the traffic; this region first (or
//! the regions a replay names); machines under their soft limit before those over it;
//! never beyond a hard limit. With no machine able to serve, one is started when its
//! services allow `autostart` — one start per app at a time, so a burst starts one
//! machine. It does not speak HTTP: failures are [`RouteError`]s the caller renders.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::instance::{Entry, Instance, Service};
use crate::Inner;

/// What a request wants: which app, through which entry, and any constraints a
/// `fly-replay` or a routing header adds.
#[derive(Debug, Clone)]
pub struct Want {
    pub app: String,
    pub entry: Entry,
    /// Regions in order of preference; empty means "this region first, then any".
    pub regions: Vec<String>,
    /// Exactly this machine (`fly-force-instance-id`, `fly-replay: instance=`).
    pub instance: Option<String>,
    /// Not this machine (`fly-replay: elsewhere=true`).
    pub exclude: Option<String>,
}

impl Want {
    pub fn app(app: &str, entry: Entry) -> Want {
        Want {
            app: app.to_string(),
            entry,
            regions: Vec::new(),
            instance: None,
            exclude: None,
        }
    }
}

/// The machine chosen, and where its service that takes the traffic listens.
#[derive(Debug, Clone)]
pub struct Target {
    pub instance: Instance,
    pub addr: SocketAddr,
}

/// Why no machine was chosen.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no app named {0}")]
    NoApp(String),
    #[error("machine {machine} of app {app} not found")]
    NoMachine { app: String, machine: String },
    #[error("no machine of app {0} can take this request: none is started and none may be started for it")]
    NoCandidate(String),
    #[error("every machine of app {0} is at its hard limit; try again shortly")]
    Busy(String),
    #[error("could not start machine {machine}: {error}")]
    StartFailed { machine: String, error: String },
    #[error("machine {0} did not start accepting connections in time")]
    StartTimeout(String),
}

/// How long a request waits for a machine to be started and accept connections.
const START_WAIT: Duration = Duration::from_secs(30);
/// How long a request waits for a machine under its hard limit before it is refused.
const HARD_LIMIT_WAIT: Duration = Duration::from_secs(2);

enum Choice {
    Target(Target),
    /// Machines are up, but every one is at its hard limit.
    Busy,
    /// No machine can take traffic now.
    Nothing,
}

fn in_regions(inner: &Inner, want: &Want, i: &Instance) -> bool {
    want.regions.is_empty()
        || want.regions.iter().any(|r| {
            r == "any" || *r == i.region || (r == "local" && i.region == inner.config.region)
        })
}

fn region_rank(inner: &Inner, want: &Want, i: &Instance) -> usize {
    if want.regions.is_empty() {
        return usize::from(i.region != inner.config.region);
    }
    want.regions
        .iter()
        .position(|r| *r == i.region)
        .unwrap_or(want.regions.len())
}

fn choose(inner: &Inner, want: &Want) -> Choice {
    let set = inner.instances.borrow().clone();
    let Some(list) = set.get(&want.app) else {
        return Choice::Nothing;
    };
    let up: Vec<(&Instance, &Service)> = list
        .iter()
        .filter(|i| i.can_serve() && in_regions(inner, want, i))
        .filter(|i| want.exclude.as_deref() != Some(i.machine_id.as_str()))
        .filter(|i| want.instance.as_deref().is_none_or(|id| id == i.machine_id))
        .filter_map(|i| i.service_for(want.entry).map(|s| (i, s)))
        .collect();
    if up.is_empty() {
        return Choice::Nothing;
    }
    let load = |i: &Instance| inner.load.of(&i.machine_id);
    let open: Vec<(&Instance, &Service)> = up
        .into_iter()
        .filter(|(i, s)| s.hard_limit.is_none_or(|h| load(i) < h))
        .collect();
    let Some(best_rank) = open.iter().map(|(i, _)| region_rank(inner, want, i)).min() else {
        return Choice::Busy;
    };
    let nearest: Vec<(&Instance, &Service)> = open
        .into_iter()
        .filter(|(i, _)| region_rank(inner, want, i) == best_rank)
        .collect();
    let spare: Vec<(&Instance, &Service)> = nearest
        .iter()
        .copied()
        .filter(|(i, s)| load(i) < s.soft_limit)
        .collect();
    let pool = if spare.is_empty() { nearest } else { spare };
    let (i, s) = pool[inner.next.fetch_add(1, Ordering::Relaxed) % pool.len()];
    match i.address {
        Some(ip) => Choice::Target(Target {
            addr: SocketAddr::new(ip, s.internal_port),
            instance: i.clone(),
        }),
        None => Choice::Nothing,
    }
}

/// Chooses a machine for `want`, waiting for capacity or starting one when needed.
pub async fn route(inner: &Inner, want: &Want) -> Result<Target, RouteError> {
    if let Some(id) = &want.instance {
        return forced(inner, want, id).await;
    }
    match choose(inner, want) {
        Choice::Target(t) => Ok(t),
        Choice::Busy => wait_for_capacity(inner, want).await,
        Choice::Nothing => autostart(inner, want).await,
    }
}

/// Waits for a machine to fall under its hard limit.
async fn wait_for_capacity(inner: &Inner, want: &Want) -> Result<Target, RouteError> {
    let until = tokio::time::Instant::now() + HARD_LIMIT_WAIT;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(25)).await;
        if let Choice::Target(t) = choose(inner, want) {
            return Ok(t);
        }
    }
    Err(RouteError::Busy(want.app.clone()))
}

fn find(inner: &Inner, app: &str, machine_id: &str) -> Option<Instance> {
    inner
        .instances
        .borrow()
        .get(app)
        .and_then(|l| l.iter().find(|i| i.machine_id == machine_id).cloned())
}

/// The machine a request names, started for it if it may be.
async fn forced(inner: &Inner, want: &Want, machine_id: &str) -> Result<Target, RouteError> {
    let Some(machine) = find(inner, &want.app, machine_id) else {
        return Err(if inner.instances.borrow().contains_key(&want.app) {
            RouteError::NoMachine {
                app: want.app.clone(),
                machine: machine_id.to_string(),
            }
        } else {
            RouteError::NoApp(want.app.clone())
        });
    };
    if machine.state != "started" && machine.services.iter().any(|s| s.autostart) {
        inner
            .starter
            .start(&want.app, machine_id)
            .await
            .map_err(|error| RouteError::StartFailed {
                machine: machine_id.to_string(),
                error,
            })?;
    }
    wait_until_accepting(inner, want, machine_id).await
}

/// Waits until `choose` finds a machine (the named one, if any) that accepts connections.
async fn wait_until_accepting(
    inner: &Inner,
    want: &Want,
    machine_id: &str,
) -> Result<Target, RouteError> {
    let deadline = tokio::time::Instant::now() + START_WAIT;
    let mut rx = inner.instances.clone();
    loop {
        let started = match choose(inner, want) {
            Choice::Target(t) => {
                if tokio::net::TcpStream::connect(t.addr).await.is_ok() {
                    return Ok(t);
                }
                true
            }
            _ => false,
        };
        if tokio::time::Instant::now() > deadline {
            return Err(RouteError::StartTimeout(machine_id.to_string()));
        }
        if started {
            // Started, but its process is not listening yet: it will be in a moment.
            tokio::time::sleep(Duration::from_millis(5)).await;
        } else {
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
        }
    }
}

/// Starts a machine of the app that may be started for this traffic, and waits until it
/// accepts connections.
async fn autostart(inner: &Inner, want: &Want) -> Result<Target, RouteError> {
    let lock = {
        let mut map = inner.starting.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(want.app.clone()).or_default().clone()
    };
    let _one_at_a_time = lock.lock().await;
    if let Choice::Target(t) = choose(inner, want) {
        return Ok(t);
    }
    let startable = inner.instances.borrow().get(&want.app).and_then(|list| {
        let mut candidates: Vec<&Instance> = list
            .iter()
            .filter(|i| {
                matches!(i.state.as_str(), "stopped" | "suspended" | "created")
                    && in_regions(inner, want, i)
                    && want.exclude.as_deref() != Some(i.machine_id.as_str())
                    && i.service_for(want.entry).is_some_and(|s| s.autostart)
            })
            .collect();
        // Nearest first; a suspended machine resumes faster than a stopped one starts.
        candidates.sort_by_key(|i| (region_rank(inner, want, i), i.state != "suspended"));
        candidates.first().map(|i| (*i).clone())
    });
    let Some(machine) = startable else {
        return Err(if inner.instances.borrow().contains_key(&want.app) {
            RouteError::NoCandidate(want.app.clone())
        } else {
            RouteError::NoApp(want.app.clone())
        });
    };
    inner
        .starter
        .start(&want.app, &machine.machine_id)
        .await
        .map_err(|error| RouteError::StartFailed {
            machine: machine.machine_id.clone(),
            error,
        })?;
    wait_until_accepting(inner, want, &machine.machine_id).await
}
