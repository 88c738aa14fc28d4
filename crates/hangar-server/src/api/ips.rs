//! `/v1/apps/{app}/ip_assignments`: list, allocate and release an app's addresses
//! (machines-api.md §12).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use hangar_store::IpRecord;
use hangar_types::edge::{AllocateIpRequest, IpAssignment, IpAssignments, IpNetwork};

use super::apps::load_app;
use super::{ApiError, JsonBody};
use crate::auth::Caller;
use crate::edge::IpKind;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps/{app}/ip_assignments", get(list).post(allocate))
        .route("/apps/{app}/ip_assignments/{ip}", delete(release))
}

fn view(r: IpRecord, org_slug: &str) -> IpAssignment {
    IpAssignment {
        network: r.network.clone().map(|name| IpNetwork {
            name,
            org_slug: org_slug.to_string(),
        }),
        ip: r.ip,
        region: r.region,
        service_name: r.service_name,
        shared: r.shared,
        egress: false,
        created_at: r.created_at,
        kind: r.kind,
    }
}

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
) -> Result<Json<IpAssignments>, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let name = app.name.clone();
    let rows = state.store.call(move |db| db.ips_of_app(&name)).await?;
    Ok(Json(IpAssignments {
        ips: rows.into_iter().map(|r| view(r, &app.org_slug)).collect(),
    }))
}

async fn allocate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    JsonBody(body): JsonBody<AllocateIpRequest>,
) -> Result<Json<IpAssignment>, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    if body.kind.is_empty() {
        return Err(ApiError::unprocessable(
            "type is required: one of v4, shared_v4, v6, private_v6",
        ));
    }
    let kind = IpKind::parse(&body.kind)?;
    let slug = app.org_slug.clone();
    let org_id = state
        .store
        .call(move |db| db.org(&slug))
        .await?
        .map_or(1, |o| o.numeric_id);
    let record = state
        .edge
        .allocate(
            &app.name,
            org_id,
            kind,
            body.region,
            body.network,
            body.service_name,
        )
        .await?;
    state.meter.count_now();
    Ok(Json(view(record, &app.org_slug)))
}

async fn release(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, ip)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    if state.edge.release(&app.name, &ip).await? {
        state.meter.count_now();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "app {} holds no address {ip}; see `hangar ips list -a {}`",
            app.name, app.name
        )))
    }
}
