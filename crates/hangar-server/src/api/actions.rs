//! Lifecycle actions and read-outs of one machine (machines-api.md §6.7–6.14): start,
//! stop, restart, suspend, signal, cordon, uncordon, exec, ps, wait, events, versions.
//! Actions return once the transition is recorded; `wait` blocks until a state.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hangar_types::requests::{
    ExecRequest, ExecResponse, OkResponse, SignalRequest, StartResponse, StopRequest, WaitResponse,
};
use hangar_types::{GoDuration, MachineEvent, MachineState, MachineVersion, ProcessStat, Signal};

use super::machines::{check_lease, load_machine};
use super::{ApiError, JsonBody, Params};
use crate::auth::Caller;
use crate::AppState;
use hangar_agent::api::Snapshot;
use tokio::sync::watch;

type MachinePath = Path<(String, String)>;

pub(super) fn routes() -> Router<AppState> {
    let m = "/apps/{app}/machines/{id}";
    Router::new()
        .route(&format!("{m}/start"), post(start))
        .route(&format!("{m}/stop"), post(stop))
        .route(&format!("{m}/restart"), post(restart))
        .route(&format!("{m}/suspend"), post(suspend))
        .route(&format!("{m}/signal"), post(signal))
        .route(&format!("{m}/cordon"), post(cordon))
        .route(&format!("{m}/uncordon"), post(uncordon))
        .route(&format!("{m}/exec"), post(exec))
        .route(&format!("{m}/ps"), get(ps))
        .route(&format!("{m}/wait"), get(wait))
        .route(&format!("{m}/events"), get(events))
        .route(&format!("{m}/versions"), get(versions))
}

/// Loads the machine, refuses destroyed ones, and checks the lease.
async fn guarded(
    state: &AppState,
    caller: &Caller,
    app: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<String, ApiError> {
    let m = load_machine(state, caller, app, id).await?;
    if m.state == MachineState::Destroyed {
        return Err(ApiError::not_found("machine not found"));
    }
    check_lease(state, &m.id, headers).await?;
    Ok(m.id)
}

async fn start(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id)): MachinePath,
    h: HeaderMap,
) -> Result<Json<StartResponse>, ApiError> {
    let id = guarded(&s, &c, &app, &id, &h).await?;
    let prev = s.agent.start(&id).await?;
    Ok(Json(StartResponse {
        previous_state: prev.to_string(),
        migrated: false,
        new_host: String::new(),
    }))
}

async fn stop(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id)): MachinePath,
    h: HeaderMap,
    JsonBody(body): JsonBody<StopRequest>,
) -> Result<Json<OkResponse>, ApiError> {
    let id = guarded(&s, &c, &app, &id, &h).await?;
    let timeout = check_stop_timeout(body.timeout.map(|t| t.0))?;
    s.agent.stop(&id, body.signal, timeout).await?;
    Ok(Json(OkResponse { ok: true }))
}

fn check_stop_timeout(t: Option<Duration>) -> Result<Option<Duration>, ApiError> {
    match t {
        Some(t) if t.as_secs() > hangar_types::machine_config::MAX_STOP_TIMEOUT_SECS => {
            Err(ApiError::invalid(format!(
                "stop timeout must be at most 5m0s, got {}",
                GoDuration(t)
            )))
        }
        other => Ok(other),
    }
}

/// `?timeout=` as a Go duration string or a number of seconds.
fn duration_param(q: &Params, key: &str) -> Result<Option<Duration>, ApiError> {
    match q.get(key).map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(secs) => Ok(Some(Duration::from_secs(secs))),
            Err(_) => GoDuration::parse(v)
                .map(|d| Some(d.0))
                .map_err(|e| ApiError::invalid(format!("{key}: {e}"))),
        },
    }
}

fn signal_param(q: &Params) -> Result<Option<Signal>, ApiError> {
    q.get("signal")
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<Signal>().map_err(ApiError::invalid))
        .transpose()
}

async fn restart(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id)): MachinePath,
    h: HeaderMap,
    q: Params,
) -> Result<Json<OkResponse>, ApiError> {
    let id = guarded(&s, &c, &app, &id, &h).await?;
    let timeout = check_stop_timeout(duration_param(&q, "timeout")?)?;
    let signal = match (signal_param(&q)?, q.flag("force_stop")?) {
        // A forced stop kills the machine rather than asking it to stop.
        (None, true) => Some(Signal::SIGKILL),
        (signal, _) => signal,
    };
    s.agent.restart(&id, signal, timeout).await?;
    Ok(Json(OkResponse { ok: true }))
}

async fn suspend(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id)): MachinePath,
    h: HeaderMap,
) -> Result<Json<OkResponse>, ApiError> {
    let id = guarded(&s, &c, &app, &id, &h).await?;
    s.agent.suspend(&id).await?;
    Ok(Json(OkResponse { ok: true }))
}

async fn signal(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id)): MachinePath,
    JsonBody(body): JsonBody<SignalRequest>,
) -> Result<Json<OkResponse>, ApiError> {
    let m = load_machine(&s, &c, &app, &id).await?;
    s.agent.signal(&m.id, body.signal).await?;
    Ok(Json(OkResponse { ok: true }))
}

async fn set_cordon(
    s: &AppState,
    c: &Caller,
    app: &str,
    id: &str,
    h: &HeaderMap,
    cordoned: bool,
) -> Result<Json<OkResponse>, ApiError> {
    let id = guarded(s, c, app, id, h).await?;
    s.agent.cordon(&id, cordoned).await?;
    Ok(Json(OkResponse { ok: true }))
}

async fn cordon(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id)): MachinePath,
    h: HeaderMap,
) -> Result<Json<OkResponse>, ApiError> {
    set_cordon(&s, &c, &app, &id, &h, true).await
}

async fn uncordon(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id)): MachinePath,
    h: HeaderMap,
) -> Result<Json<OkResponse>, ApiError> {
    set_cordon(&s, &c, &app, &id, &h, false).await
}

/// Longest a command may run through `exec`.
const MAX_EXEC_TIMEOUT_SECS: u64 = 300;
const DEFAULT_EXEC_TIMEOUT_SECS: u64 = 30;

async fn exec(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id)): MachinePath,
    h: HeaderMap,
    JsonBody(body): JsonBody<ExecRequest>,
) -> Result<Json<ExecResponse>, ApiError> {
    let argv = body.argv().map_err(ApiError::invalid)?;
    let secs = body
        .timeout
        .filter(|t| *t > 0)
        .unwrap_or(DEFAULT_EXEC_TIMEOUT_SECS);
    if secs > MAX_EXEC_TIMEOUT_SECS {
        return Err(ApiError::invalid(format!(
            "exec timeout must be at most {MAX_EXEC_TIMEOUT_SECS} seconds, got {secs}"
        )));
    }
    let id = guarded(&s, &c, &app, &id, &h).await?;
    let out = s
        .agent
        .exec(&id, argv, body.stdin.clone(), Duration::from_secs(secs))
        .await?;
    Ok(Json(ExecResponse {
        exit_code: out.exit_code,
        exit_signal: 0,
        stdout: out.stdout,
        stderr: out.stderr,
    }))
}

async fn ps(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id)): MachinePath,
    q: Params,
) -> Result<Json<Vec<ProcessStat>>, ApiError> {
    let m = load_machine(&s, &c, &app, &id).await?;
    let sort_by = q.get("sort_by").unwrap_or("pid").to_string();
    let desc = match q.get("order").unwrap_or("asc") {
        "" | "asc" => false,
        "desc" => true,
        other => {
            return Err(ApiError::invalid(format!(
                "order must be asc or desc, got {other:?}"
            )))
        }
    };
    let mut list = s.agent.ps(&m.id).await?;
    match sort_by.as_str() {
        "" | "pid" => list.sort_by_key(|p| p.pid),
        "cpu" => list.sort_by_key(|p| p.cpu),
        "rss" | "mem" => list.sort_by_key(|p| p.rss),
        "rtime" => list.sort_by_key(|p| p.rtime),
        "stime" => list.sort_by_key(|p| p.stime),
        "command" => list.sort_by(|a, b| a.command.cmp(&b.command)),
        other => {
            return Err(ApiError::invalid(format!(
                "sort_by must be pid, cpu, rss, rtime, stime or command, got {other:?}"
            )))
        }
    }
    if desc {
        list.reverse();
    }
    Ok(Json(list))
}

/// What `wait` waits for.
struct WaitTarget {
    states: Vec<String>,
    version: Option<String>,
    from_event_id: Option<String>,
}

impl WaitTarget {
    fn wants(&self, state: MachineState) -> bool {
        self.states
            .iter()
            .any(|w| w == state.as_str() || (w == "settled" && state.is_settled()))
    }

    fn met_by(&self, snap: &Snapshot) -> bool {
        let after = self
            .from_event_id
            .as_deref()
            .is_none_or(|from| snap.event_id.as_str() > from);
        self.wants(snap.state) && after
    }
}

const WAIT_STATES: &[&str] = &[
    "started",
    "stopped",
    "suspended",
    "destroyed",
    "failed",
    "settled",
    "created",
];

fn wait_timeout(q: &Params) -> Result<Duration, ApiError> {
    let t = duration_param(q, "timeout")?.unwrap_or(Duration::from_secs(60));
    if t < Duration::from_secs(1) || t > Duration::from_secs(60) {
        return Err(ApiError::invalid(format!(
            "wait timeout must be between 1s and 1m0s, got {}",
            GoDuration(t)
        )));
    }
    Ok(t)
}

fn deadline(target: &WaitTarget, current: &str) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "deadline_exceeded: machine failed to reach desired state, {}, currently {current}",
            target.states.join(",")
        ),
    )
}

async fn wait(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id)): MachinePath,
    q: Params,
) -> Result<Json<WaitResponse>, ApiError> {
    let target = WaitTarget::from_params(&q)?;
    let timeout = wait_timeout(&q)?;
    let m = load_machine(&s, &c, &app, &id).await?;
    let Some(rx) = s.agent.api().watch(&m.id).await else {
        // No actor: the machine is destroyed.
        return target.last(Snapshot {
            state: m.state,
            version: m.instance_id.clone(),
            event_id: String::new(),
        });
    };
    let mid = m.id.clone();
    let newest = s.store.call(move |db| db.events(&mid, 1)).await?;
    let fallback_event = newest.first().map(|e| e.id.clone()).unwrap_or_default();
    target.follow(rx, fallback_event, timeout).await
}

impl WaitTarget {
    /// The target a request names: its `state`s (`started` when none), the `version`
    /// (or `instance_id`) to stay on, and the event to come after.
    fn from_params(q: &Params) -> Result<WaitTarget, ApiError> {
        let mut states = q.list("state");
        if states.is_empty() {
            states.push("started".into());
        }
        if let Some(bad) = states.iter().find(|st| !WAIT_STATES.contains(&st.as_str())) {
            return Err(ApiError::invalid(format!(
                "invalid state {bad:?} to wait for: use started, stopped, suspended, destroyed, failed or settled"
            )));
        }
        Ok(WaitTarget {
            states,
            version: q
                .get("version")
                .or(q.get("instance_id"))
                .filter(|v| !v.is_empty())
                .map(str::to_string),
            from_event_id: q
                .get("from_event_id")
                .filter(|v| !v.is_empty())
                .map(str::to_string),
        })
    }

    /// Follows the machine's snapshots until one meets the target, its version is
    /// replaced, it is destroyed, or `timeout` passes. Snapshots with no event yet
    /// carry `fallback_event`, the machine's newest.
    async fn follow(
        &self,
        mut rx: watch::Receiver<Snapshot>,
        fallback_event: String,
        timeout: Duration,
    ) -> Result<Json<WaitResponse>, ApiError> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let mut snap = rx.borrow_and_update().clone();
            if snap.event_id.is_empty() {
                snap.event_id = fallback_event.clone();
            }
            if let Some(v) = &self.version {
                if *v != snap.version {
                    return Err(deadline(self, "replaced"));
                }
            }
            if self.met_by(&snap) {
                return Ok(wait_response(&snap));
            }
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) => continue,
                // The actor ended: the machine was destroyed.
                Ok(Err(_)) => {
                    return self.last(Snapshot {
                        state: MachineState::Destroyed,
                        ..snap
                    })
                }
                Err(_) => return Err(deadline(self, snap.state.as_str())),
            }
        }
    }

    /// The answer for a machine that will change no more: whether its last state is
    /// one waited for.
    fn last(&self, snap: Snapshot) -> Result<Json<WaitResponse>, ApiError> {
        if self.wants(snap.state) {
            Ok(wait_response(&snap))
        } else {
            Err(deadline(self, snap.state.as_str()))
        }
    }
}

fn wait_response(snap: &Snapshot) -> Json<WaitResponse> {
    Json(WaitResponse {
        ok: true,
        state: snap.state.to_string(),
        version: snap.version.clone(),
        event_id: snap.event_id.clone(),
    })
}

async fn events(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id)): MachinePath,
    q: Params,
) -> Result<Json<Vec<MachineEvent>>, ApiError> {
    let limit = match q.get("limit").filter(|v| !v.is_empty()) {
        None => 20,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ApiError::invalid(format!("limit must be a positive number, got {v:?}")))?
            .clamp(1, 50),
    };
    let m = load_machine(&s, &c, &app, &id).await?;
    Ok(Json(s.store.call(move |db| db.events(&m.id, limit)).await?))
}

async fn versions(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id)): MachinePath,
) -> Result<Json<Vec<MachineVersion>>, ApiError> {
    let m = load_machine(&s, &c, &app, &id).await?;
    let list = s.store.call(move |db| db.versions(&m.id)).await?;
    Ok(Json(
        list.into_iter()
            .map(|(version, user_config)| MachineVersion {
                version,
                user_config,
            })
            .collect(),
    ))
}
