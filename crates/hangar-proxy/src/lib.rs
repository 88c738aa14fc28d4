//! The edge proxy: requests for `<app>.<app-domain>` go to one of the app's started,
//! uncordoned machines (round robin, this region first); when none runs, a stopped or
//! suspended machine whose services allow `autostart` is started and the request waits
//! for it to accept connections. Fly's request headers are added on the way.
//!
//! The proxy reads only the live set of instances the supervisor publishes on a watch
//! channel ([`InstanceSet`]); it never queries the store. It starts machines through the
//! [`Starter`] seam. TLS, health checks, concurrency limits, autostop and fly-replay
//! are not here yet.

pub mod autostop;
mod forward;
mod load;

pub use load::Load;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One machine as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub machine_id: String,
    pub app: String,
    pub region: String,
    /// The machine's state (`started`, `stopped`, ...).
    pub state: String,
    pub cordoned: bool,
    /// Where the machine's services listen.
    pub address: Option<IpAddr>,
    /// Whether its service checks pass (true when it has none).
    pub healthy: bool,
    pub services: Vec<Service>,
}

/// A service of a machine that takes HTTP from the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub internal_port: u16,
    /// Whether the proxy may start the machine for a request (absent counts as yes).
    pub autostart: bool,
    /// What autostop does to an idle machine.
    pub autostop: AutostopMode,
    /// Requests above which a machine has no spare capacity (Fly's default: 20).
    pub soft_limit: usize,
    /// Requests a machine is never given more of at once.
    pub hard_limit: Option<usize>,
    /// Machines autostop leaves running in the primary region.
    pub min_machines_running: usize,
}

/// `services[].autostop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutostopMode {
    Off,
    Stop,
    Suspend,
}

/// Every known machine, by app. Each app's list is shared, so a change to one machine
/// copies only its app's list.
pub type InstanceSet = HashMap<String, Arc<Vec<Instance>>>;

/// Starts a machine for a request.
#[async_trait::async_trait]
pub trait Starter: Send + Sync + 'static {
    async fn start(&self, app: &str, machine_id: &str) -> Result<(), String>;
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Apps are reached at `<app>.<app_domain>`.
    pub app_domain: String,
    /// The region this proxy runs in; its machines are preferred.
    pub region: String,
}

struct Inner {
    config: ProxyConfig,
    instances: watch::Receiver<Arc<InstanceSet>>,
    starter: Arc<dyn Starter>,
    client: forward::Client,
    load: Arc<Load>,
    next: AtomicUsize,
    /// One start at a time per app, so a burst of requests starts one machine.
    starting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// How long a request waits for a machine to be started and accept connections.
const START_WAIT: Duration = Duration::from_secs(30);

/// Serves HTTP on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: ProxyConfig,
    instances: watch::Receiver<Arc<InstanceSet>>,
    starter: Arc<dyn Starter>,
    load: Arc<Load>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let inner = Arc::new(Inner {
        config,
        instances,
        starter,
        client: forward::client(),
        load,
        next: AtomicUsize::new(0),
        starting: Mutex::default(),
    });
    let app = axum::Router::new().fallback(handle).with_state(inner);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

/// The app a `Host` header names, if it is `<app>.<app_domain>`.
pub fn app_of(host: &str, app_domain: &str) -> Option<String> {
    let host = host.trim().to_ascii_lowercase();
    let name = host
        .rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map_or(host.as_str(), |(h, _)| h);
    let app = name.strip_suffix(app_domain)?.strip_suffix('.')?;
    (!app.is_empty() && !app.contains('.')).then(|| app.to_string())
}

fn error(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

/// Where to send a request for `app`: a started, uncordoned machine with a service,
/// this region first, round robin among equals.
fn pick(inner: &Inner, app: &str) -> Option<(Instance, SocketAddr)> {
    match choose(inner, app) {
        Choice::Target(i, addr) => Some((i, addr)),
        Choice::Busy | Choice::Nothing => None,
    }
}

/// What the balancer found for an app.
enum Choice {
    Target(Instance, SocketAddr),
    /// Machines are up, but every one is at its hard limit.
    Busy,
    /// No machine can take traffic now.
    Nothing,
}

/// A started, healthy, uncordoned machine under its hard limit: this region first, then
/// those under their soft limit, round robin among equals.
fn choose(inner: &Inner, app: &str) -> Choice {
    let set = inner.instances.borrow().clone();
    let Some(list) = set.get(app) else {
        return Choice::Nothing;
    };
    let up: Vec<&Instance> = list
        .iter()
        .filter(|i| {
            i.state == "started"
                && i.healthy
                && !i.cordoned
                && i.address.is_some()
                && !i.services.is_empty()
        })
        .collect();
    if up.is_empty() {
        return Choice::Nothing;
    }
    let load = |i: &Instance| inner.load.of(&i.machine_id);
    let open: Vec<&Instance> = up
        .iter()
        .copied()
        .filter(|i| i.services[0].hard_limit.is_none_or(|h| load(i) < h))
        .collect();
    if open.is_empty() {
        return Choice::Busy;
    }
    let local: Vec<&Instance> = open
        .iter()
        .copied()
        .filter(|i| i.region == inner.config.region)
        .collect();
    let pool = if local.is_empty() { open } else { local };
    let spare: Vec<&Instance> = pool
        .iter()
        .copied()
        .filter(|i| load(i) < i.services[0].soft_limit)
        .collect();
    let pool = if spare.is_empty() { pool } else { spare };
    let chosen = pool[inner.next.fetch_add(1, Ordering::Relaxed) % pool.len()].clone();
    match chosen.address {
        Some(ip) => {
            let addr = SocketAddr::new(ip, chosen.services[0].internal_port);
            Choice::Target(chosen, addr)
        }
        None => Choice::Nothing,
    }
}

/// How long a request waits for a machine under its hard limit before it is refused.
const HARD_LIMIT_WAIT: Duration = Duration::from_secs(2);

/// Waits for a machine to fall under its hard limit.
async fn wait_for_capacity(inner: &Inner, app: &str) -> Option<(Instance, SocketAddr)> {
    let until = tokio::time::Instant::now() + HARD_LIMIT_WAIT;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(25)).await;
        if let Choice::Target(i, addr) = choose(inner, app) {
            return Some((i, addr));
        }
    }
    None
}

/// The machine a request names with `fly-force-instance-id`, started for it if it may
/// be.
async fn forced(
    inner: &Inner,
    app: &str,
    machine_id: &str,
) -> Result<(Instance, SocketAddr), Response> {
    let find = || {
        inner
            .instances
            .borrow()
            .get(app)
            .and_then(|l| l.iter().find(|i| i.machine_id == machine_id).cloned())
    };
    let Some(machine) = find() else {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("machine {machine_id} of app {app} not found (fly-force-instance-id)"),
        ));
    };
    if machine.state != "started" && machine.services.iter().any(|s| s.autostart) {
        inner.starter.start(app, machine_id).await.map_err(|e| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("could not start machine {machine_id}: {e}"),
            )
        })?;
    }
    let deadline = tokio::time::Instant::now() + START_WAIT;
    loop {
        if let Some(i) = find().filter(|i| i.state == "started" && i.healthy) {
            if let (Some(ip), Some(svc)) = (i.address, i.services.first()) {
                let addr = SocketAddr::new(ip, svc.internal_port);
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return Ok((i, addr));
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("machine {machine_id} is not available (fly-force-instance-id)"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a machine of the app that may be started for a request, and waits until it
/// accepts connections.
async fn autostart(inner: &Inner, app: &str) -> Result<(Instance, SocketAddr), Response> {
    let lock = {
        let mut map = inner.starting.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(app.to_string()).or_default().clone()
    };
    let _one_at_a_time = lock.lock().await;
    if let Some(found) = pick(inner, app) {
        return Ok(found);
    }
    let startable = inner.instances.borrow().get(app).and_then(|list| {
        list.iter()
            .find(|i| {
                matches!(i.state.as_str(), "stopped" | "suspended" | "created")
                    && i.services.iter().any(|s| s.autostart)
            })
            .cloned()
    });
    let Some(machine) = startable else {
        let known = inner.instances.borrow().contains_key(app);
        return Err(if known {
            error(StatusCode::SERVICE_UNAVAILABLE, format!("no machine of app {app} can take this request: none is started and none may be started for it"))
        } else {
            error(StatusCode::NOT_FOUND, format!("no app named {app}"))
        });
    };
    inner
        .starter
        .start(app, &machine.machine_id)
        .await
        .map_err(|e| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("could not start machine {}: {e}", machine.machine_id),
            )
        })?;
    let deadline = tokio::time::Instant::now() + START_WAIT;
    let mut rx = inner.instances.clone();
    loop {
        if let Some((i, addr)) = pick(inner, app) {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok((i, addr));
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "machine {} did not start accepting connections in time",
                    machine.machine_id
                ),
            ));
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().host().map(str::to_string))
        .unwrap_or_default();
    let Some(app) = app_of(&host, &inner.config.app_domain) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no app is served at {host:?}; use <app>.{}",
                inner.config.app_domain
            ),
        );
    };
    let forced_id = req
        .headers()
        .get("fly-force-instance-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let target = if let Some(id) = forced_id {
        match forced(&inner, &app, &id).await {
            Ok(t) => t,
            Err(resp) => return resp,
        }
    } else {
        match choose(&inner, &app) {
            Choice::Target(i, addr) => (i, addr),
            Choice::Busy => match wait_for_capacity(&inner, &app).await {
                Some(t) => t,
                None => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "every machine of app {app} is at its hard limit; try again shortly"
                        ),
                    )
                }
            },
            Choice::Nothing => match autostart(&inner, &app).await {
                Ok(t) => t,
                Err(resp) => return resp,
            },
        }
    };
    let guard = inner.load.enter(&target.0.machine_id);
    let resp = forward::forward(&inner.client, req, target.1, client, &inner.config.region).await;
    // The request counts until its answer has been passed on whole.
    resp.map(|body| {
        let stream = futures_util::StreamExt::map(body.into_data_stream(), move |chunk| {
            let _counted = &guard;
            chunk
        });
        axum::body::Body::from_stream(stream)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_apps() {
        assert_eq!(
            app_of("web.localhost:8080", "localhost").as_deref(),
            Some("web")
        );
        assert_eq!(
            app_of("WEB.example.com", "example.com").as_deref(),
            Some("web")
        );
        assert_eq!(app_of("localhost", "localhost"), None);
        assert_eq!(app_of("a.b.localhost", "localhost"), None);
        assert_eq!(app_of("web.other.org", "localhost"), None);
    }
}
