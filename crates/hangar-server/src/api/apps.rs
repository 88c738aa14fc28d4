//! `/v1/apps`: list, create, show, delete (machines-api.md §5).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use hangar_store::AppRecord;
use hangar_types::app::validate_app_name;
use hangar_types::{
    App, CreateAppRequest, CreateAppResponse, ListApp, ListAppsResponse, Organization,
};

use super::{idempotency, ApiError, JsonBody, Params};
use crate::auth::Caller;
use crate::{clock, ids, AppState};

pub(super) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/apps",
            get(list)
                .post(create)
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    idempotency::guard,
                )),
        )
        .route("/apps/{app}", get(show).delete(destroy))
}

/// Loads an app the caller may see: 404 when it does not exist, 403 when it belongs to
/// another org.
pub(super) async fn load_app(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<AppRecord, ApiError> {
    let n = name.to_string();
    let app = state
        .store
        .call(move |db| db.app(&n))
        .await?
        .ok_or_else(|| ApiError::not_found("app not found"))?;
    if app.org_slug != caller.token.org_slug {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "unauthorized"));
    }
    Ok(app)
}

fn org_of(app: &AppRecord) -> Organization {
    Organization {
        name: if app.org_slug == "personal" {
            "Personal".into()
        } else {
            app.org_slug.clone()
        },
        slug: app.org_slug.clone(),
    }
}

fn status_of(app: &AppRecord) -> String {
    if app.machine_count > 0 {
        "deployed"
    } else {
        "pending"
    }
    .into()
}

pub(super) fn view(app: &AppRecord) -> App {
    App {
        id: app.id.clone(),
        name: app.name.clone(),
        organization: org_of(app),
        status: status_of(app),
        machine_count: app.machine_count,
        network: app.network.clone(),
        hostname: None,
        app_url: None,
    }
}

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Params,
) -> Result<Json<ListAppsResponse>, ApiError> {
    let org = q
        .get("org_slug")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("org_slug is required: use ?org_slug=personal"))?
        .to_string();
    if org != caller.token.org_slug {
        return Err(ApiError::not_found(format!(
            "organization {org:?} not found"
        )));
    }
    let apps = state.store.call(move |db| db.apps_in_org(&org)).await?;
    Ok(Json(ListAppsResponse {
        total_apps: apps.len() as i64,
        apps: apps
            .iter()
            .map(|a| ListApp {
                id: a.id.clone(),
                name: a.name.clone(),
                machine_count: a.machine_count,
                network: a.network.clone(),
                organization: Some(org_of(a)),
                status: status_of(a),
            })
            .collect(),
    }))
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<CreateAppRequest>,
) -> Result<Response, ApiError> {
    let name = body
        .app_name()
        .ok_or_else(|| {
            ApiError::bad_request(
                "app_name is required: give {\"app_name\": \"my-app\", \"org_slug\": \"personal\"}",
            )
        })?
        .to_string();
    validate_app_name(&name).map_err(ApiError::unprocessable)?;
    let org = body
        .org_slug
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| caller.token.org_slug.clone());
    if org != caller.token.org_slug {
        return Err(ApiError::not_found(format!(
            "organization {org:?} not found"
        )));
    }
    let network = body
        .network
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let record = AppRecord {
        id: ids::app_id(),
        name: name.clone(),
        org_slug: org,
        network,
        created_at_ms: clock::now_ms(),
        machine_count: 0,
        org_numeric_id: 0,
    };
    let r = record.clone();
    let slug = record.org_slug.clone();
    let org_id = state
        .store
        .call(move |db| db.org(&slug))
        .await?
        .map_or(1, |o| o.numeric_id);
    match state.store.call(move |db| db.insert_app(&r)).await {
        Ok(()) => {}
        Err(e) if e.is_unique_violation() => {
            // A retry of a create that stopped half-way finishes the provisioning.
            let n = name.clone();
            let existing = state.store.call(move |db| db.app(&n)).await?;
            if existing.is_some_and(|a| a.org_slug == caller.token.org_slug) {
                state.edge.provision(&name, org_id).await?;
            }
            return Err(
                ApiError::unprocessable("Validation failed: Name has already been taken")
                    .with_code("name_taken"),
            );
        }
        Err(e) => return Err(e.into()),
    }
    state.edge.provision(&name, org_id).await?;
    tracing::info!(app = %name, "app created");
    let body = CreateAppResponse {
        id: record.id.clone(),
        name: record.name.clone(),
        created_at: record.created_at_ms,
        organization: org_of(&record),
        status: status_of(&record),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
) -> Result<Json<App>, ApiError> {
    let mut app = view(&load_app(&state, &caller, &app).await?);
    let hostname = state.edge.app_hostname(&app.name);
    let https = state.edge_ports.1;
    app.app_url = Some(if https == 443 {
        format!("https://{hostname}")
    } else {
        format!("https://{hostname}:{https}")
    });
    app.hostname = Some(hostname);
    Ok(Json(app))
}

/// Deletes the app after destroying its machines (killing running ones).
async fn destroy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
) -> Result<StatusCode, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let name = app.name.clone();
    let machines = state
        .store
        .call(move |db| db.machine_listings(&name, &Default::default()))
        .await?;
    for m in machines {
        match state.agent.destroy(&m.id, true).await {
            Ok(()) | Err(hangar_agent::api::OpError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    crate::volumes::destroy_all_of(&state, &app.name).await?;
    let name = app.name.clone();
    state.store.call(move |db| db.delete_app(&name)).await?;
    state.edge.forget_app().await?;
    tracing::info!(app = %app.name, "app deleted");
    Ok(StatusCode::ACCEPTED)
}
