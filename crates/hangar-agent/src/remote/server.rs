//! The agent's side of the interface over HTTP: every [`AgentApi`] call as a route under
//! `/agent/v1`, answered by this host's supervisor, for a control plane on another
//! process or host. Requests carry the agent token as a bearer token; an error is
//! the [`OpError`] as JSON with a status that says its kind.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hangar_types::MachineConfig;
use serde::Deserialize;

use super::{CreateBody, LogQuery, WaitQuery, CONSOLE_SPEC_PARAM, PREFIX};
use crate::api::{AgentApi, Command, OpError};
use crate::supervisor::Supervisor;
use crate::tunnel::{self, PrivateTarget};
use hangar_runtime::console::ConsoleSpec;

/// How long a wait for a machine's next state holds the request at most.
const LONGEST_WAIT: Duration = Duration::from_secs(25);

#[derive(Clone)]
struct Served {
    supervisor: Supervisor,
    token: Arc<str>,
}

/// The routes, answered by `supervisor`, for callers that present `token`.
pub fn router(supervisor: Supervisor, token: &str) -> Router {
    let served = Served {
        supervisor,
        token: token.into(),
    };
    Router::new()
        .route(&format!("{PREFIX}/check_config"), post(check_config))
        .route(&format!("{PREFIX}/prepare"), post(prepare))
        .route(&format!("{PREFIX}/machines"), post(create))
        .route(&format!("{PREFIX}/machines/{{id}}/command"), post(command))
        .route(&format!("{PREFIX}/machines/{{id}}/wait"), get(wait))
        .route(&format!("{PREFIX}/machines/{{id}}/logs"), get(logs))
        .route(&format!("{PREFIX}/checks"), post(checks))
        .route(&format!("{PREFIX}/volumes"), post(volume))
        .route(&format!("{PREFIX}/private/resolve"), get(resolve_private))
        .route(&format!("{PREFIX}/private/dial"), get(dial_private))
        .route(&format!("{PREFIX}/machines/{{id}}/console"), post(console))
        .route(&format!("{PREFIX}/wireguard"), post(wireguard))
        .with_state(served)
}

struct Failure(StatusCode, OpError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<OpError> for Failure {
    fn from(e: OpError) -> Self {
        let status = match &e {
            OpError::Precondition(_) => StatusCode::PRECONDITION_FAILED,
            OpError::Invalid(_) => StatusCode::BAD_REQUEST,
            OpError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            OpError::NotFound => StatusCode::NOT_FOUND,
            OpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            OpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(status, e)
    }
}

fn authorized(s: &Served, headers: &HeaderMap) -> Result<(), Failure> {
    if super::bearer_matches(headers.get(axum::http::header::AUTHORIZATION), &s.token) {
        Ok(())
    } else {
        Err(Failure(
            StatusCode::UNAUTHORIZED,
            OpError::Invalid("the agent token is missing or wrong".into()),
        ))
    }
}

#[derive(Deserialize)]
struct ConfigBody {
    config: Box<MachineConfig>,
}

async fn check_config(
    State(s): State<Served>,
    headers: HeaderMap,
    Json(body): Json<ConfigBody>,
) -> Result<StatusCode, Failure> {
    authorized(&s, &headers)?;
    AgentApi::check_config(&s.supervisor, &body.config).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn prepare(
    State(s): State<Served>,
    headers: HeaderMap,
    Json(body): Json<ConfigBody>,
) -> Result<StatusCode, Failure> {
    authorized(&s, &headers)?;
    AgentApi::prepare(&s.supervisor, &body.config).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create(
    State(s): State<Served>,
    headers: HeaderMap,
    Json(body): Json<CreateBody>,
) -> Result<StatusCode, Failure> {
    authorized(&s, &headers)?;
    AgentApi::create(&s.supervisor, body.machine, body.skip_launch).await?;
    Ok(StatusCode::CREATED)
}

async fn command(
    State(s): State<Served>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(command): Json<Command>,
) -> Result<Response, Failure> {
    authorized(&s, &headers)?;
    let outcome = AgentApi::command(&s.supervisor, &id, command).await?;
    Ok(Json(outcome).into_response())
}

/// The machine's state: at once without `after`; with it, once its newest event is
/// not `after`, or as it is when the wait runs out.
async fn wait(
    State(s): State<Served>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Response, Failure> {
    authorized(&s, &headers)?;
    let mut rx = s.supervisor.watch(&id).ok_or(OpError::NotFound)?;
    let _ = tokio::time::timeout(
        LONGEST_WAIT,
        rx.wait_for(|snap| q.after.as_ref().is_none_or(|a| snap.event_id != *a)),
    )
    .await;
    let snap = rx.borrow().clone();
    Ok(Json(snap).into_response())
}

async fn logs(
    State(s): State<Served>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, Failure> {
    authorized(&s, &headers)?;
    let cursor = q.decode().map_err(OpError::Invalid)?;
    let read = AgentApi::logs(&s.supervisor, &id, cursor).await?;
    Ok(Json(read).into_response())
}

async fn checks(
    State(s): State<Served>,
    headers: HeaderMap,
    Json(ids): Json<Vec<String>>,
) -> Result<Response, Failure> {
    authorized(&s, &headers)?;
    Ok(Json(AgentApi::checks(&s.supervisor, &ids).await).into_response())
}

async fn volume(
    State(s): State<Served>,
    headers: HeaderMap,
    Json(op): Json<crate::volumes::VolumeOp>,
) -> Result<Json<Result<crate::volumes::VolumeReply, crate::volumes::VolumeError>>, Failure> {
    authorized(&s, &headers)?;
    Ok(Json(AgentApi::volume(&s.supervisor, &op).await))
}

#[derive(Deserialize)]
struct ResolveQuery {
    org: u16,
    host: String,
}

async fn resolve_private(
    State(s): State<Served>,
    headers: HeaderMap,
    Query(q): Query<ResolveQuery>,
) -> Result<Response, Failure> {
    authorized(&s, &headers)?;
    let addresses = AgentApi::resolve_private(&s.supervisor, q.org, &q.host).await?;
    Ok(Json(addresses).into_response())
}

/// Dials the target, then becomes a tunnel to it: a failed dial is an error answer, so
/// the caller hears why before anything is switched.
async fn dial_private(
    State(s): State<Served>,
    Query(target): Query<PrivateTarget>,
    mut request: axum::extract::Request,
) -> Result<Response, Failure> {
    authorized(&s, request.headers())?;
    if !tunnel::wants_tunnel(request.headers()) {
        return Err(OpError::Invalid(format!(
            "a dial asks for `Connection: upgrade` and `Upgrade: {}`",
            tunnel::TUNNEL_PROTOCOL
        ))
        .into());
    }
    let stream = AgentApi::dial_private(&s.supervisor, &target).await?;
    Ok(tunnel::splice(&mut request, stream))
}

/// Opens the session, then becomes its stream of frames.
async fn console(
    State(s): State<Served>,
    Path(id): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    mut request: axum::extract::Request,
) -> Result<Response, Failure> {
    authorized(&s, request.headers())?;
    if !tunnel::wants_tunnel(request.headers()) {
        return Err(OpError::Invalid(format!(
            "a console asks for `Connection: upgrade` and `Upgrade: {}`",
            tunnel::TUNNEL_PROTOCOL
        ))
        .into());
    }
    let session = q
        .get(CONSOLE_SPEC_PARAM)
        .and_then(|v| serde_json::from_str::<ConsoleSpec>(v).ok())
        .ok_or_else(|| {
            OpError::Invalid(format!(
                "a console needs its session in `{CONSOLE_SPEC_PARAM}`"
            ))
        })?;
    let stream = AgentApi::console(&s.supervisor, &id, &session).await?;
    Ok(tunnel::splice(&mut request, stream))
}

async fn wireguard(
    State(s): State<Served>,
    headers: HeaderMap,
    Json(peers): Json<Vec<crate::api::GatewayPeer>>,
) -> Result<Response, Failure> {
    authorized(&s, &headers)?;
    let info = AgentApi::wireguard(&s.supervisor, peers).await?;
    Ok(Json(info).into_response())
}
