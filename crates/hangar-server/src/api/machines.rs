//! `/v1/apps/{app}/machines` and `/v1/apps/{app}/machines/{id}`: list, create, show,
//! update, destroy (machines-api.md §6.1–6.6), the `Machine` view, and the lease guard
//! every mutating machine route passes through.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use hangar_store::{LeaseRecord, MachineFilter, MachineRecord};
use hangar_types::requests::{CreateMachineRequest, OkResponse};
use hangar_types::{
    CheckStatus, ImageRef, Lease, Machine, MachineConfig, MachineEvent, MachineState,
};
use serde::Serialize;
use serde_json::value::RawValue;

use super::apps::load_app;
use super::{idempotency, ApiError, JsonBody, Params};
use crate::auth::Caller;
use crate::{clock, fleet, AppState};

/// How many recent events a machine embeds in its JSON.
const EMBEDDED_EVENTS: usize = 10;

pub(super) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/apps/{app}/machines",
            get(list)
                .post(create)
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    idempotency::guard,
                )),
        )
        .route(
            "/apps/{app}/machines/{id}",
            get(show).post(update).put(update).delete(destroy),
        )
}

/// Loads a machine of an app the caller may see; 404 `machine not found` otherwise.
pub(super) async fn load_machine(
    state: &AppState,
    caller: &Caller,
    app: &str,
    id: &str,
) -> Result<MachineRecord, ApiError> {
    let app = load_app(state, caller, app).await?;
    let id = id.to_string();
    state
        .store
        .call(move |db| db.machine(&app.name, &id))
        .await?
        .ok_or_else(|| ApiError::not_found("machine not found"))
}

pub(super) const NONCE_HEADER: &str = "fly-machine-lease-nonce";

pub(super) fn nonce_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(NONCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub(super) fn lease_held_message(l: &LeaseRecord) -> String {
    format!(
        "machine ID {} lease currently held by {}, expires at {}",
        l.machine_id,
        l.owner,
        clock::rfc3339_from_secs(l.expires_at)
    )
}

/// Refuses a mutation of a leased machine unless the request carries the lease's nonce,
/// and refuses a nonce that no longer names a live lease.
pub(super) async fn check_lease(
    state: &AppState,
    machine_id: &str,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let id = machine_id.to_string();
    let lease = state
        .store
        .call(move |db| db.active_lease(&id, clock::now_secs()))
        .await?;
    match (lease, nonce_of(headers)) {
        (Some(l), Some(n)) if l.nonce == n => Ok(()),
        (Some(l), _) => Err(ApiError::conflict(format!("aborted: {}", lease_held_message(&l)))),
        (None, Some(_)) => Err(ApiError::conflict(
            "aborted: the lease nonce sent in fly-machine-lease-nonce has expired or was released; acquire a new lease (POST …/lease) or send no nonce",
        )),
        (None, None) => Ok(()),
    }
}

/// The `Machine` JSON of a stored machine.
pub(super) fn view(
    m: &MachineRecord,
    events: Vec<MachineEvent>,
    checks: Vec<CheckStatus>,
    lease: Option<Lease>,
    nonce: Option<String>,
) -> Machine {
    Machine {
        id: m.id.clone(),
        name: m.name.clone(),
        state: m.state.to_string(),
        region: m.region.clone(),
        instance_id: m.instance_id.clone(),
        version: m.instance_id.clone(),
        private_ip: m.private_ip.clone(),
        image_ref: ImageRef::parse(&m.config.image),
        config: m.config.clone(),
        created_at: m.created_at.clone(),
        updated_at: m.updated_at.clone(),
        events,
        checks,
        nonce,
        lease,
        host_status: "ok".into(),
        cordoned: m.cordoned,
    }
}

fn lease_view(l: &LeaseRecord, version: &str) -> Lease {
    Lease {
        nonce: None,
        expires_at: l.expires_at,
        owner: l.owner.clone(),
        description: l.description.clone(),
        version: version.to_string(),
    }
}

/// One machine of a listing, serialized straight from stored JSON (`config` and
/// `events` are embedded as they are kept, not decoded and encoded again).
#[derive(Serialize)]
struct ListedMachine<'a> {
    id: &'a str,
    name: &'a str,
    state: &'a str,
    region: &'a str,
    instance_id: &'a str,
    version: &'a str,
    private_ip: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<&'a RawValue>,
    image_ref: ImageRef,
    created_at: &'a str,
    updated_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "hangar_types::omit::vec")]
    checks: Option<Vec<CheckStatus>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<Lease>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_status: Option<&'a str>,
    cordoned: bool,
}

fn raw(json: &str) -> Result<&RawValue, ApiError> {
    serde_json::from_str(json).map_err(ApiError::internal)
}

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let mut states = Vec::new();
    for s in q.list("state") {
        states.push(s.parse::<MachineState>().map_err(ApiError::invalid)?);
    }
    let filter = MachineFilter {
        include_deleted: q.flag("include_deleted")?,
        region: q
            .get("region")
            .filter(|r| !r.is_empty())
            .map(str::to_string),
        states,
        metadata: q.prefixed("metadata."),
    };
    let (summary, include_leases) = (q.flag("summary")?, q.flag("include_leases")?);
    let name = app.name.clone();
    let (machines, leases) = state
        .store
        .call(move |db| {
            let machines = db.machine_listings(&name, &filter)?;
            let mut leases = std::collections::HashMap::new();
            if include_leases {
                for m in &machines {
                    if let Some(l) = db.active_lease(&m.id, clock::now_secs())? {
                        leases.insert(m.id.clone(), l);
                    }
                }
            }
            Ok((machines, leases))
        })
        .await?;
    let mut checks = if summary {
        Default::default()
    } else {
        let ids: Vec<String> = machines.iter().map(|m| m.id.clone()).collect();
        state.agent.api().checks(&ids).await
    };
    let mut out = Vec::with_capacity(machines.len());
    for m in &machines {
        out.push(ListedMachine {
            id: &m.id,
            name: &m.name,
            state: m.state.as_str(),
            region: &m.region,
            instance_id: &m.instance_id,
            version: &m.instance_id,
            private_ip: &m.private_ip,
            config: if summary {
                None
            } else {
                Some(raw(&m.config_json)?)
            },
            image_ref: ImageRef::parse(&m.image),
            created_at: &m.created_at,
            updated_at: &m.updated_at,
            events: if summary {
                None
            } else {
                Some(raw(&m.events_json)?)
            },
            checks: (!summary).then(|| checks.remove(&m.id).unwrap_or_default()),
            lease: leases.get(&m.id).map(|l| lease_view(l, &m.instance_id)),
            host_status: (!summary).then_some("ok"),
            cordoned: m.cordoned,
        });
    }
    let body = serde_json::to_vec(&out).map_err(ApiError::internal)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// Reads a config from a create or update body and checks it: 400 naming the problem.
async fn checked_config(
    state: &AppState,
    config: Option<MachineConfig>,
) -> Result<MachineConfig, ApiError> {
    let config = config.ok_or_else(|| {
        ApiError::invalid("config is required: give {\"config\": {\"image\": \"...\"}}")
    })?;
    fleet::check_config(state, &config).await?;
    Ok(config)
}

/// Region codes that mean "wherever the platform likes": they resolve to this host's.
const REGION_ALIASES: &[&str] = &["any", "apac", "eu", "na", "sa", "us", "usa", "local"];

pub(super) fn resolve_region(
    requested: Option<&str>,
    server_region: &str,
) -> Result<String, ApiError> {
    let first = requested
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .find(|s| !s.is_empty() && *s != "[local]");
    let Some(code) = first.map(str::to_ascii_lowercase) else {
        return Ok(server_region.to_string());
    };
    if REGION_ALIASES.contains(&code.as_str()) {
        return Ok(server_region.to_string());
    }
    if (2..=8).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(code)
    } else {
        Err(ApiError::invalid(format!(
            "invalid region {code:?}: use a region code such as \"ord\" or \"ams\""
        )))
    }
}

fn check_machine_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "invalid machine name {name:?}: use up to 63 letters, digits, dashes, dots or underscores"
        )))
    }
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    JsonBody(body): JsonBody<CreateMachineRequest>,
) -> Result<Json<Machine>, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let config = checked_config(&state, body.config.clone()).await?;
    let region = resolve_region(body.region.as_deref(), &state.region)?;
    fleet::prepare(&state, &config).await?;
    let name = body.name.as_deref().filter(|n| !n.is_empty());
    if let Some(n) = name {
        check_machine_name(n)?;
    }
    let name = name.map(str::to_string);
    let (record, launch, lease) = fleet::create(
        &state,
        &app,
        fleet::NewMachine {
            config,
            region,
            name,
            skip_launch: body.skip_launch == Some(true),
            cordoned: body.skip_service_registration == Some(true),
            lease: body
                .lease_ttl
                .filter(|t| *t > 0)
                .map(|ttl| (caller.owner(), ttl)),
        },
    )
    .await?;
    Ok(Json(view(
        &record,
        vec![launch],
        Vec::new(),
        None,
        lease.map(|l| l.nonce),
    )))
}

async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
    q: Params,
) -> Result<Json<Machine>, ApiError> {
    let m = load_machine(&state, &caller, &app, &id).await?;
    let include_leases = q.flag("include_leases")?;
    let mid = m.id.clone();
    let (events, lease) = state
        .store
        .call(move |db| {
            let lease = if include_leases {
                db.active_lease(&mid, clock::now_secs())?
            } else {
                None
            };
            Ok((db.events(&mid, EMBEDDED_EVENTS)?, lease))
        })
        .await?;
    let lease = lease.map(|l| lease_view(&l, &m.instance_id));
    let checks = state.agent.check_results(&m.id).await;
    Ok(Json(view(&m, events, checks, lease, None)))
}

async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateMachineRequest>,
) -> Result<Json<Machine>, ApiError> {
    let m = load_machine(&state, &caller, &app, &id).await?;
    let config = checked_config(&state, body.config.clone()).await?;
    if m.state == MachineState::Destroyed {
        return Err(ApiError::not_found("machine not found"));
    }
    if let Some(v) = body.current_version.as_deref().filter(|v| !v.is_empty()) {
        if v != m.instance_id {
            return Err(ApiError::precondition(format!(
                "failed_precondition: machine version mismatch: the machine is at version {}, the update was based on {v}; GET the machine and retry",
                m.instance_id
            )));
        }
    }
    check_lease(&state, &m.id, &headers).await?;
    fleet::prepare(&state, &config).await?;
    let skip_launch = body.skip_launch == Some(true);
    state.agent.update(&m.id, config, skip_launch).await?;
    let mid = m.id.clone();
    let (m, events) = state
        .store
        .call(move |db| Ok((db.machine_by_id(&mid)?, db.events(&mid, EMBEDDED_EVENTS)?)))
        .await?;
    let m = m.ok_or_else(|| ApiError::not_found("machine not found"))?;
    let checks = state.agent.check_results(&m.id).await;
    Ok(Json(view(&m, events, checks, None, None)))
}

async fn destroy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    q: Params,
) -> Result<Json<OkResponse>, ApiError> {
    let m = load_machine(&state, &caller, &app, &id).await?;
    let force = q.flag("force")? || q.flag("kill")?;
    if m.state == MachineState::Destroyed {
        return Err(ApiError::not_found("machine not found"));
    }
    check_lease(&state, &m.id, &headers).await?;
    state.agent.destroy(&m.id, force).await?;
    Ok(Json(OkResponse { ok: true }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_resolve() {
        assert_eq!(resolve_region(None, "lcl").unwrap(), "lcl");
        assert_eq!(resolve_region(Some("lhr,eu"), "lcl").unwrap(), "lhr");
        assert_eq!(resolve_region(Some("any"), "lcl").unwrap(), "lcl");
        assert!(resolve_region(Some("not a region"), "lcl").is_err());
    }
}
