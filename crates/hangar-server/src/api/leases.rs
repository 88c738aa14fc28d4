//! Machine leases (machines-api.md §6.9): acquire or refresh, show, release, in the
//! `{status, data}` envelope real clients read.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use hangar_store::LeaseRecord;
use hangar_types::requests::CreateLeaseRequest;
use hangar_types::{Lease, LeaseEnvelope, MachineState};
use serde_json::json;

use super::machines::{lease_held_message, load_machine, nonce_of};
use super::{idempotency, ApiError, JsonBody, Params};
use crate::auth::Caller;
use crate::{clock, ids, AppState};

/// TTL of a lease when the caller names none, and the longest one granted.
const DEFAULT_TTL_SECS: u64 = 30;
const MAX_TTL_SECS: u64 = 24 * 3600;

pub(super) fn routes(state: &AppState) -> Router<AppState> {
    Router::new().route(
        "/apps/{app}/machines/{id}/lease",
        get(show)
            .post(acquire)
            .delete(release)
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                idempotency::guard,
            )),
    )
}

fn envelope(l: &LeaseRecord, version: &str) -> LeaseEnvelope {
    LeaseEnvelope {
        status: "success".into(),
        data: Some(Lease {
            nonce: Some(l.nonce.clone()),
            expires_at: l.expires_at,
            owner: l.owner.clone(),
            description: l.description.clone(),
            version: version.to_string(),
        }),
        message: None,
        code: None,
    }
}

fn conflict(message: String) -> Response {
    let body = LeaseEnvelope {
        status: "error".into(),
        data: None,
        message: Some(message.clone()),
        code: Some("invalid".into()),
    };
    let mut v = serde_json::to_value(body).unwrap_or_default();
    // Clients that only read Fly's usual error body see the same message.
    v["error"] = json!(message);
    (StatusCode::CONFLICT, Json(v)).into_response()
}

async fn acquire(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    q: Params,
    JsonBody(body): JsonBody<CreateLeaseRequest>,
) -> Result<Response, ApiError> {
    let ttl = match q.get("ttl").filter(|v| !v.is_empty()) {
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::invalid(format!("ttl must be a number of seconds, got {v:?}"))
        })?),
        None => body.ttl,
    }
    .filter(|t| *t > 0)
    .unwrap_or(DEFAULT_TTL_SECS);
    if ttl > MAX_TTL_SECS {
        return Err(ApiError::invalid(format!(
            "ttl must be at most {MAX_TTL_SECS} seconds, got {ttl}"
        )));
    }
    let m = load_machine(&s, &caller, &app, &id).await?;
    if m.state == MachineState::Destroyed {
        return Err(ApiError::not_found("machine not found"));
    }
    let now = clock::now_secs();
    let nonce = nonce_of(&headers);
    let mid = m.id.clone();
    let current = s.store.call(move |db| db.active_lease(&mid, now)).await?;
    let lease = match (current, nonce) {
        (Some(l), Some(n)) if l.nonce == n => LeaseRecord {
            expires_at: now + ttl as i64,
            description: body.description.clone().unwrap_or(l.description.clone()),
            ..l
        },
        (Some(l), _) => return Ok(conflict(lease_held_message(&l))),
        (None, Some(_)) => {
            return Ok(conflict(format!(
                "lease for machine ID {} has expired or was released; acquire a new lease without the fly-machine-lease-nonce header",
                m.id
            )))
        }
        (None, None) => LeaseRecord {
            machine_id: m.id.clone(),
            nonce: ids::lease_nonce(),
            owner: caller.owner(),
            description: body.description.clone().unwrap_or_default(),
            expires_at: now + ttl as i64,
        },
    };
    let l = lease.clone();
    s.store.call(move |db| db.put_lease(&l)).await?;
    Ok((StatusCode::CREATED, Json(envelope(&lease, &m.instance_id))).into_response())
}

async fn show(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<LeaseEnvelope>, ApiError> {
    let m = load_machine(&s, &caller, &app, &id).await?;
    let mid = m.id.clone();
    let lease = s
        .store
        .call(move |db| db.active_lease(&mid, clock::now_secs()))
        .await?
        .ok_or_else(|| ApiError::not_found("lease not found"))?;
    Ok(Json(envelope(&lease, &m.instance_id)))
}

async fn release(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let m = load_machine(&s, &caller, &app, &id).await?;
    let nonce = nonce_of(&headers).ok_or_else(|| {
        ApiError::bad_request("the fly-machine-lease-nonce header is required to release a lease")
    })?;
    let mid = m.id.clone();
    let lease = s
        .store
        .call(move |db| db.active_lease(&mid, clock::now_secs()))
        .await?
        .ok_or_else(|| ApiError::not_found("lease not found"))?;
    if lease.nonce != nonce {
        return Ok(conflict(lease_held_message(&lease)));
    }
    let mid = m.id.clone();
    s.store.call(move |db| db.delete_lease(&mid)).await?;
    Ok(Json(json!({ "status": "success", "data": { "ok": true } })).into_response())
}
