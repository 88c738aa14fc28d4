//! Deploys and releases: `POST /v1/apps/{app}/deploys` starts a deploy on the server,
//! `GET …/releases[/{version}]` lists releases and shows one with its config,
//! `GET …/releases/{id}/progress` streams a deploy's progress as NDJSON until it ends,
//! and `POST …/releases/{version}/rollback` deploys an old release's image, config and
//! secrets as a new release.
//!
//! Deploy requests become a [`Plan`] here; running it is `crate::deploy`'s.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hangar_appconfig::AppConfig;
use hangar_store::{AppRecord, ReleaseRecord};
use hangar_types::deploy::{
    DeployEvent, DeployRequest, Release, ReleaseDetail, ReleaseList, ReleaseStatus, RollbackRequest,
};

use super::apps::load_app;
use super::{ApiError, JsonBody, Params};
use crate::auth::Caller;
use crate::deploy::{self, Plan, Strategy, DEFAULT_WAIT};
use crate::{clock, AppState};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps/{app}/deploys", post(create))
        .route("/apps/{app}/releases", get(list))
        .route("/apps/{app}/releases/{release}", get(show))
        .route("/apps/{app}/releases/{release}/progress", get(progress))
        .route("/apps/{app}/releases/{release}/rollback", post(rollback))
}

pub(super) fn view(r: &ReleaseRecord, current: Option<i64>) -> Release {
    Release {
        id: r.id.clone(),
        version: r.version,
        status: r.status,
        strategy: r.strategy.as_str().to_ascii_uppercase(),
        description: r.description.clone(),
        user: r.user.clone(),
        image_ref: r.image.clone(),
        secrets_version: r.secrets_version,
        stable: current == Some(r.version),
        in_progress: r.status.in_progress(),
        error: r.error.clone(),
        created_at: r.created_at.clone(),
        updated_at: r.updated_at.clone(),
    }
}

fn invalid_config(errors: Vec<String>) -> ApiError {
    ApiError::unprocessable(format!(
        "App configuration is not valid: {}",
        errors.join("; ")
    ))
}

/// Reads and checks a config sent as JSON.
fn read_config(value: serde_json::Value) -> Result<AppConfig, ApiError> {
    let loaded =
        hangar_appconfig::from_value(value).map_err(|e| invalid_config(vec![e.to_string()]))?;
    check(&loaded.config)?;
    Ok(loaded.config)
}

/// A 422 listing every error `Validate` finds.
fn check(config: &AppConfig) -> Result<(), ApiError> {
    let errors: Vec<String> = config
        .validate()
        .into_iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid_config(errors))
    }
}

async fn current_release(state: &AppState, app: &str) -> Result<Option<ReleaseRecord>, ApiError> {
    let a = app.to_string();
    Ok(state.store.call(move |db| db.current_release(&a)).await?)
}

/// A plan from a deploy request, every override applied and checked.
async fn plan(state: &AppState, app: AppRecord, req: DeployRequest) -> Result<Plan, ApiError> {
    let current = current_release(state, &app.name).await?;
    let (mut config, image) = starting_point(&app, current, &req)?;
    config.env.extend(req.env.clone());
    if let Some(r) = req.primary_region.clone().filter(|r| !r.is_empty()) {
        config.primary_region = Some(r);
    }
    let strategy_name = req
        .strategy
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| config.strategy());
    let strategy = Strategy::parse(&strategy_name).map_err(ApiError::unprocessable)?;
    config.deploy.get_or_insert_with(Default::default).strategy = Some(strategy.as_str().into());
    check(&config)?;
    let d = config.deploy.clone().unwrap_or_default();
    let max_unavailable = req.max_unavailable.or(d.max_unavailable).unwrap_or(0.33);
    if max_unavailable <= 0.0 {
        return Err(ApiError::unprocessable(
            "max_unavailable must be above 0: a fraction such as 0.33, or a number of machines",
        ));
    }
    let wait_timeout = machine_wait(&req, &d);
    let description = req.description.clone().unwrap_or_else(|| {
        if req.restart_only {
            "Restart machines with new secrets".to_string()
        } else {
            format!("Deploy image {image}")
        }
    });
    Ok(Plan {
        app,
        config,
        image,
        strategy,
        max_unavailable,
        wait_timeout,
        release_command_timeout: req
            .release_command_timeout
            .or(d.release_command_timeout)
            .map(|t| t.0)
            .unwrap_or(DEFAULT_WAIT),
        ha: req.ha.unwrap_or(true),
        skip_release_command: req.skip_release_command,
        restart_only: req.restart_only,
        secrets: None,
        description,
    })
}

/// The config and image a deploy starts from: on a restart the current release's, else
/// the request's.
fn starting_point(
    app: &AppRecord,
    current: Option<ReleaseRecord>,
    req: &DeployRequest,
) -> Result<(AppConfig, String), ApiError> {
    if req.restart_only {
        let r = current.ok_or_else(|| {
            ApiError::unprocessable(format!(
                "no machines available to deploy: app {} has no complete release yet; the secrets are staged for its first deploy",
                app.name
            ))
        })?;
        let value = serde_json::from_str(&r.definition).map_err(ApiError::internal)?;
        Ok((read_config(value)?, r.image))
    } else {
        let value = req.config.clone().ok_or_else(|| {
            ApiError::unprocessable("config is required: send the app's fly.toml as JSON")
        })?;
        let image = req
            .image
            .clone()
            .filter(|i| !i.trim().is_empty())
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "image is required: build one (hangar deploy builds the Dockerfile) or pass --image",
                )
            })?;
        Ok((read_config(value)?, image))
    }
}

/// The per-machine wait: the request's, else the config's, else flyctl's default; zero
/// means two minutes.
fn machine_wait(req: &DeployRequest, d: &hangar_appconfig::Deploy) -> Duration {
    let wait_timeout = req
        .wait_timeout
        .or(d.wait_timeout)
        .map(|w| w.0)
        .unwrap_or(DEFAULT_WAIT);
    if wait_timeout.is_zero() {
        Duration::from_secs(120)
    } else {
        wait_timeout
    }
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    JsonBody(req): JsonBody<DeployRequest>,
) -> Result<(StatusCode, Json<Release>), ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let plan = plan(&state, app, req).await?;
    let release = deploy::start(&state, plan, caller.owner()).await?;
    Ok((StatusCode::CREATED, Json(view(&release, None))))
}

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    params: Params,
) -> Result<Json<ReleaseList>, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let limit: i64 = match params.get("limit") {
        Some(l) => l.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::bad_request(format!("invalid limit {l:?}: give a positive number"))
        })?,
        None => 25,
    };
    let name = app.name.clone();
    let (rows, current) = state
        .store
        .call(move |db| Ok((db.releases(&name, limit)?, db.current_release(&name)?)))
        .await?;
    let current = current.map(|c| c.version);
    Ok(Json(ReleaseList {
        releases: rows.iter().map(|r| view(r, current)).collect(),
    }))
}

/// A release by version (`3` or `v3`), by id, or `current`.
async fn find(state: &AppState, app: &str, which: &str) -> Result<ReleaseRecord, ApiError> {
    let (a, w) = (app.to_string(), which.to_string());
    let found = state
        .store
        .call(move |db| {
            if w == "current" {
                return db.current_release(&a);
            }
            match w.trim_start_matches('v').parse::<i64>() {
                Ok(v) => db.release_by_version(&a, v),
                Err(_) => Ok(db.release(&w)?.filter(|r| r.app_name == a)),
            }
        })
        .await?;
    found.ok_or_else(|| {
        ApiError::not_found(format!(
            "release {which} not found in app {app}; `hangar releases` lists them"
        ))
    })
}

async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, which)): Path<(String, String)>,
) -> Result<Json<ReleaseDetail>, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let r = find(&state, &app.name, &which).await?;
    let current = current_release(&state, &app.name).await?.map(|c| c.version);
    let config = serde_json::from_str(&r.definition).map_err(ApiError::internal)?;
    Ok(Json(ReleaseDetail {
        release: view(&r, current),
        config,
    }))
}

fn ndjson(events: &[DeployEvent]) -> Bytes {
    let mut out = Vec::new();
    for e in events {
        if serde_json::to_writer(&mut out, e).is_ok() {
            out.push(b'\n');
        }
    }
    Bytes::from(out)
}

async fn progress(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, which)): Path<(String, String)>,
    params: Params,
) -> Result<Response, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let r = find(&state, &app.name, &which).await?;
    let after: u64 = params
        .get("after")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let headers = [(header::CONTENT_TYPE, "application/x-ndjson")];
    let Some(reporter) = state.deploys.get(&r.id) else {
        // Not deployed by this server process: its outcome is all there is to tell.
        let ok = r.status == ReleaseStatus::Complete;
        let message = match &r.error {
            Some(e) => format!("v{} {}: {e}", r.version, r.status),
            None => format!("v{} {}", r.version, r.status),
        };
        let event = DeployEvent {
            seq: after + 1,
            at: clock::now_ms(),
            kind: if ok { "complete" } else { "failed" }.into(),
            message,
            machine_id: None,
            group: None,
            done: None,
            total: None,
        };
        return Ok((headers, ndjson(&[event])).into_response());
    };
    let stream = futures_util::stream::unfold(Some(after), move |cursor| {
        let reporter = reporter.clone();
        async move {
            let after = cursor?;
            let events = reporter.next(after).await;
            if events.is_empty() {
                return None;
            }
            let last = events.last().map(|e| e.seq).unwrap_or(after);
            let done = events.iter().any(DeployEvent::is_final);
            let next = (!done).then_some(last);
            Some((Ok::<_, Infallible>(ndjson(&events)), next))
        }
    });
    Ok((headers, Body::from_stream(stream)).into_response())
}

async fn rollback(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, which)): Path<(String, String)>,
    JsonBody(req): JsonBody<RollbackRequest>,
) -> Result<(StatusCode, Json<Release>), ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let target = find(&state, &app.name, &which).await?;
    let secrets = state
        .vault
        .open_snapshot(&app.name, &target.secrets)
        .map_err(ApiError::internal)?;
    let value = serde_json::from_str(&target.definition).map_err(ApiError::internal)?;
    let deploy_req = DeployRequest {
        config: Some(value),
        image: Some(target.image.clone()),
        strategy: req.strategy.clone(),
        wait_timeout: req.wait_timeout,
        skip_release_command: true,
        description: Some(format!("Rollback to v{}", target.version)),
        ..Default::default()
    };
    let mut plan = plan(&state, app, deploy_req).await?;
    plan.secrets = Some(secrets);
    let release = deploy::start(&state, plan, caller.owner()).await?;
    Ok((StatusCode::CREATED, Json(view(&release, None))))
}
