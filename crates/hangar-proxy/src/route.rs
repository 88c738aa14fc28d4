//! Choosing the machine for a request or connection, as Fly's proxy does. Candidates
//! are the machines whose services take the traffic: started, passing and uncordoned
//! ones, and those the proxy is starting for traffic (`wake`). This region first (or
//! the regions a replay names); a machine under its soft limit first; when every one is
//! over it, a stopped or suspended machine that allows `autostart` is started — each at
//! most once, however many requests want it — and the request waits for it; then any
//! machine under its hard limit; when all are at it, the request queues until one has
//! room. A request counts against its machine from the moment it is picked, including
//! while it waits for the machine to start, so autostop and draining stops see it. A
//! machine that goes away while a request waits on it costs that request a new pick,
//! not its timeout. It does not speak HTTP: failures are [`RouteError`]s the caller
//! renders.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::instance::{Entry, Health, Instance, Service};
use crate::load::{LoadGuard, QueuedGuard};
use crate::wake::{Outcome, Wake, START_WAIT};
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

/// A chosen machine with the request already counted against it.
#[derive(Debug)]
pub struct Routed {
    pub target: Target,
    pub load: LoadGuard,
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
    #[error("every machine of app {0} stayed at its hard limit for {1:?}; try again shortly, or raise concurrency.hard_limit or add machines")]
    Busy(String, Duration),
    #[error("machine {0} has no service that takes this traffic")]
    NotServing(String),
    #[error("machine {0} is not started, and its services do not allow autostart")]
    NotStartable(String),
    #[error("could not start machine {machine}: {error}")]
    StartFailed { machine: String, error: String },
    #[error("machine {0} did not start accepting connections in time")]
    StartTimeout(String),
}

/// How a candidate could take the request.
enum Kind {
    /// It serves now.
    Ready,
    /// The proxy is starting it; the request waits until it accepts connections.
    Waking(Arc<Wake>),
    /// Stopped or suspended, and its service allows `autostart`.
    Startable,
}

struct Candidate<'a> {
    /// As the set showed it, or — for a machine being woken — as it is now.
    instance: Cow<'a, Instance>,
    service: Service,
    kind: Kind,
    rank: usize,
    load: usize,
}

/// What one look at the instance set gives.
enum Pick {
    Ready(Routed),
    /// Counted against a machine being started; wait for it.
    Waking {
        wake: Arc<Wake>,
        port: u16,
        load: LoadGuard,
    },
    /// Another request took the last place first: look again.
    Retry,
    /// Machines are up or starting, but every one is at its hard limit.
    Full,
    /// No machine can take the traffic, and none may be started for it.
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

fn is_startable(i: &Instance) -> bool {
    matches!(i.state.as_str(), "stopped" | "suspended" | "created")
}

/// Whether the app's machine `machine_id` may take requests now.
pub fn machine_serves(inner: &Inner, app: &str, machine_id: &str) -> bool {
    // Looked up first: `serves` reads the set again, and the set's lock is not
    // reentrant once a writer waits.
    find(inner, app, machine_id).is_some_and(|i| serves(inner, &i))
}

/// Whether `i` may take requests now, woken by the proxy or not. Never call it while
/// holding a borrow of the instance set.
pub fn serves(inner: &Inner, i: &Instance) -> bool {
    i.can_serve()
        || inner
            .wakes
            .of(std::iter::once(i.machine_id.as_str()), |id| {
                find(inner, &i.app, id)
            })
            .get(&i.machine_id)
            .is_some_and(|(w, look)| w.serves(look))
}

fn candidates<'a>(
    inner: &Inner,
    want: &Want,
    list: &'a [Instance],
    skip: &HashSet<String>,
) -> Vec<Candidate<'a>> {
    let wakes = inner
        .wakes
        .of(list.iter().map(|i| i.machine_id.as_str()), |id| {
            find(inner, &want.app, id)
        });
    let mut out = Vec::new();
    for i in list {
        if !in_regions(inner, want, i)
            || want.exclude.as_deref() == Some(i.machine_id.as_str())
            || skip.contains(&i.machine_id)
        {
            continue;
        }
        let (instance, kind) = match wakes.get(&i.machine_id) {
            Some((w, look)) => {
                let Some(now) = look.instance.clone() else {
                    continue;
                };
                let kind = if w.serves(look) {
                    Kind::Ready
                } else if now.state == "started" && !(now.is_up() && now.health != Health::Failing)
                {
                    continue;
                } else {
                    Kind::Waking(w.clone())
                };
                (Cow::Owned(now), kind)
            }
            None if i.can_serve() => (Cow::Borrowed(i), Kind::Ready),
            None if is_startable(i) => (Cow::Borrowed(i), Kind::Startable),
            None => continue,
        };
        let Some(service) = instance.service_for(want.entry).cloned() else {
            continue;
        };
        if matches!(kind, Kind::Startable) && !service.autostart {
            continue;
        }
        out.push(Candidate {
            rank: region_rank(inner, want, &instance),
            load: inner.load.of(&instance.machine_id),
            instance,
            service,
            kind,
        });
    }
    out
}

/// Counts the request against `c` and says how it is to be served.
fn take(inner: &Inner, c: &Candidate) -> Pick {
    let Some(load) = inner
        .load
        .try_enter(&c.instance.machine_id, c.service.hard_limit)
    else {
        return Pick::Retry;
    };
    match &c.kind {
        Kind::Ready => match c.instance.address {
            Some(ip) => Pick::Ready(Routed {
                target: Target {
                    addr: SocketAddr::new(ip, c.service.internal_port),
                    instance: c.instance.clone().into_owned(),
                },
                load,
            }),
            None => Pick::Retry,
        },
        Kind::Waking(w) => Pick::Waking {
            wake: w.clone(),
            port: c.service.internal_port,
            load,
        },
        Kind::Startable => {
            let app = &c.instance.app;
            let (wake, first) = inner
                .wakes
                .begin(&c.instance.machine_id, |id| find(inner, app, id));
            if first {
                send_start(inner, &c.instance.app, &wake);
            }
            Pick::Waking {
                wake,
                port: c.service.internal_port,
                load,
            }
        }
    }
}

/// Asks for the machine's start, apart from any one request (a client that goes away
/// does not cancel a start others wait on).
fn send_start(inner: &Inner, app: &str, wake: &Arc<Wake>) {
    let (starter, app, wake) = (inner.starter.clone(), app.to_string(), wake.clone());
    tracing::info!(%app, machine = %wake.machine_id, "starting a machine for traffic");
    tokio::spawn(async move {
        let outcome = match starter.start(&app, &wake.machine_id).await {
            Ok(()) => Outcome::Accepted,
            Err(e) => {
                tracing::warn!(%app, machine = %wake.machine_id, error = %e, "could not start a machine for traffic");
                Outcome::Failed(e)
            }
        };
        wake.outcome.send_replace(outcome);
    });
}

/// From a pool of candidates with room: the ones serving now first (in turn), else the
/// least loaded of those starting.
fn take_from(inner: &Inner, pool: &[&Candidate]) -> Pick {
    let ready: Vec<&&Candidate> = pool
        .iter()
        .filter(|c| matches!(c.kind, Kind::Ready))
        .collect();
    if !ready.is_empty() {
        let n = inner.next.fetch_add(1, Ordering::Relaxed) % ready.len();
        return take(inner, ready[n]);
    }
    match pool.iter().min_by_key(|c| c.load) {
        Some(c) => take(inner, c),
        None => Pick::Nothing,
    }
}

fn pick(inner: &Inner, want: &Want, skip: &HashSet<String>) -> Pick {
    let set = inner.instances.borrow().clone();
    let Some(list) = set.get(&want.app) else {
        return Pick::Nothing;
    };
    let all = candidates(inner, want, list, skip);
    let has_room = |c: &&Candidate| c.service.hard_limit.is_none_or(|h| c.load < h);
    let open: Vec<&Candidate> = all
        .iter()
        .filter(|c| !matches!(c.kind, Kind::Startable))
        .filter(has_room)
        .collect();
    let best = open.iter().map(|c| c.rank).min();
    let tier: Vec<&Candidate> = open
        .iter()
        .copied()
        .filter(|c| Some(c.rank) == best)
        .collect();
    let spare: Vec<&Candidate> = tier
        .iter()
        .copied()
        .filter(|c| c.load < c.service.soft_limit)
        .collect();
    if !spare.is_empty() {
        return take_from(inner, &spare);
    }
    // Everything near is over its soft limit (or nothing runs): start another machine,
    // the nearest first, a suspended one (it resumes faster) before a stopped one.
    let startable = all
        .iter()
        .filter(|c| matches!(c.kind, Kind::Startable) && c.rank <= best.unwrap_or(usize::MAX))
        .min_by_key(|c| (c.rank, c.instance.state != "suspended"));
    if let Some(c) = startable {
        return take(inner, c);
    }
    if !tier.is_empty() {
        return take_from(inner, &tier);
    }
    if all.iter().any(|c| !matches!(c.kind, Kind::Startable)) {
        return Pick::Full;
    }
    Pick::Nothing
}

/// Why a wait on a machine being started ended without it.
enum Waited {
    Failed(String),
    /// It stopped, was cordoned or failed its checks: pick another.
    Gone,
    Timeout,
}

fn find(inner: &Inner, app: &str, machine_id: &str) -> Option<Instance> {
    inner
        .instances
        .borrow()
        .get(app)
        .and_then(|l| l.iter().find(|i| i.machine_id == machine_id).cloned())
}

/// Whether something listens at `addr`.
async fn accepts(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// How often the waiter whose turn it is tries a started machine's service port.
const PROBE_EVERY: Duration = Duration::from_millis(2);

/// Waits until the woken machine accepts connections on `port`. One waiter at a time
/// tries the port; the others wait to hear it answered, so a burst waiting on one
/// machine does not flood it with connection attempts while it boots.
async fn wait_for(inner: &Inner, app: &str, wake: &Wake, port: u16) -> Result<Target, Waited> {
    let deadline = tokio::time::Instant::from_std(wake.since + START_WAIT);
    let mut instances = inner.instances.clone();
    let mut outcome = wake.outcome.subscribe();
    let mut accepting = wake.watch_accepting();
    loop {
        instances.borrow_and_update();
        outcome.borrow_and_update();
        accepting.borrow_and_update();
        let look = wake.look(|id| find(inner, app, id));
        if let Outcome::Failed(e) = &look.outcome {
            return Err(Waited::Failed(e.clone()));
        }
        if !wake.describes(&look) {
            return Err(Waited::Gone);
        }
        let Some(i) = look.instance else {
            return Err(Waited::Gone);
        };
        let mut probed = false;
        if i.state == "started" {
            let Some(ip) = i
                .address
                .filter(|_| i.is_up() && i.health != Health::Failing)
            else {
                return Err(Waited::Gone);
            };
            let addr = SocketAddr::new(ip, port);
            if wake.accepting() {
                return Ok(Target { instance: i, addr });
            }
            if let Some(turn) = wake.claim_probe() {
                let ok = accepts(addr).await;
                drop(turn);
                if ok {
                    wake.set_accepting();
                    return Ok(Target { instance: i, addr });
                }
                // Started, but its process is not listening yet: it will be in a moment.
                probed = true;
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Waited::Timeout);
        }
        if probed {
            tokio::time::sleep(PROBE_EVERY).await;
        } else {
            tokio::select! {
                _ = instances.changed() => {}
                _ = outcome.changed() => {}
                _ = accepting.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }
}

fn nothing(inner: &Inner, want: &Want) -> RouteError {
    if inner.instances.borrow().contains_key(&want.app) {
        RouteError::NoCandidate(want.app.clone())
    } else {
        RouteError::NoApp(want.app.clone())
    }
}

/// Chooses a machine for `want` and counts the request against it: waiting for one to
/// start or to have room when needed.
pub async fn route(inner: &Inner, want: &Want) -> Result<Routed, RouteError> {
    if let Some(id) = &want.instance {
        return forced(inner, want, id).await;
    }
    let mut skip: HashSet<String> = HashSet::new();
    let mut failure: Option<RouteError> = None;
    let mut queued: Option<(QueuedGuard, Instant)> = None;
    let mut instances = inner.instances.clone();
    loop {
        let released = inner.load.released();
        tokio::pin!(released);
        released.as_mut().enable();
        instances.borrow_and_update();
        match pick(inner, want, &skip) {
            Pick::Ready(r) => return Ok(r),
            Pick::Waking { wake, port, load } => {
                match wait_for(inner, &want.app, &wake, port).await {
                    Ok(target) => return Ok(Routed { target, load }),
                    Err(Waited::Timeout) => {
                        return Err(RouteError::StartTimeout(wake.machine_id.clone()))
                    }
                    Err(Waited::Failed(error)) => {
                        failure = Some(RouteError::StartFailed {
                            machine: wake.machine_id.clone(),
                            error,
                        });
                        skip.insert(wake.machine_id.clone());
                    }
                    Err(Waited::Gone) => {
                        skip.insert(wake.machine_id.clone());
                    }
                }
            }
            Pick::Retry => tokio::task::yield_now().await,
            Pick::Full => {
                let Some((_, since)) = &queued else {
                    // Queued first, then looked at again, so no release is missed.
                    queued = Some((inner.load.queue(), Instant::now()));
                    continue;
                };
                let waited = since.elapsed();
                let limit = inner.config.queue_timeout;
                if waited >= limit {
                    return Err(RouteError::Busy(want.app.clone(), limit));
                }
                tokio::select! {
                    _ = released => {}
                    _ = instances.changed() => {}
                    _ = tokio::time::sleep((limit - waited).min(Duration::from_millis(100))) => {}
                }
            }
            Pick::Nothing => return Err(failure.unwrap_or_else(|| nothing(inner, want))),
        }
    }
}

/// The machine a request names, counted against it whatever its limits, and started
/// for it if it may be.
async fn forced(inner: &Inner, want: &Want, machine_id: &str) -> Result<Routed, RouteError> {
    let missing = || {
        if inner.instances.borrow().contains_key(&want.app) {
            RouteError::NoMachine {
                app: want.app.clone(),
                machine: machine_id.to_string(),
            }
        } else {
            RouteError::NoApp(want.app.clone())
        }
    };
    if find(inner, &want.app, machine_id).is_none() {
        return Err(missing());
    }
    let load = inner.load.enter(machine_id);
    let deadline = tokio::time::Instant::now() + START_WAIT;
    let mut instances = inner.instances.clone();
    loop {
        instances.borrow_and_update();
        let Some(i) = find(inner, &want.app, machine_id) else {
            return Err(missing());
        };
        let Some(service) = i.service_for(want.entry) else {
            return Err(RouteError::NotServing(machine_id.to_string()));
        };
        let port = service.internal_port;
        if serves(inner, &i) {
            if let Some(ip) = i.address {
                let addr = SocketAddr::new(ip, port);
                return Ok(Routed {
                    target: Target { instance: i, addr },
                    load,
                });
            }
        }
        let current = |id: &str| find(inner, &want.app, id);
        let woken = inner
            .wakes
            .of(std::iter::once(machine_id), current)
            .contains_key(machine_id);
        if !woken && !service.autostart && is_startable(&i) {
            return Err(RouteError::NotStartable(machine_id.to_string()));
        }
        if woken || is_startable(&i) {
            let (wake, first) = inner.wakes.begin(machine_id, current);
            if first {
                send_start(inner, &want.app, &wake);
            }
            match wait_for(inner, &want.app, &wake, port).await {
                Ok(target) => return Ok(Routed { target, load }),
                Err(Waited::Failed(error)) => {
                    return Err(RouteError::StartFailed {
                        machine: machine_id.to_string(),
                        error,
                    })
                }
                Err(Waited::Timeout) => {
                    return Err(RouteError::StartTimeout(machine_id.to_string()))
                }
                Err(Waited::Gone) => {}
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(RouteError::StartTimeout(machine_id.to_string()));
        }
        tokio::select! {
            _ = instances.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}
