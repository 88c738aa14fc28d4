//! Machine metadata (machines-api.md §6.10): edits change the config in place, without
//! a new version, and go through the machine's actor like every other change.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use hangar_types::requests::{MetadataUpdate, MetadataValue};
use hangar_types::MachineState;

use super::machines::load_machine;
use super::{ApiError, JsonBody};
use crate::auth::Caller;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/apps/{app}/machines/{id}/metadata",
            get(show_all).put(update_many).patch(update_many),
        )
        .route(
            "/apps/{app}/machines/{id}/metadata/{key}",
            get(show_one).post(set_one).delete(delete_one),
        )
}

fn check_key(key: &str) -> Result<(), ApiError> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "invalid metadata key {key:?}: use up to 128 letters, digits, '_', '-' or '.'"
        )))
    }
}

async fn show_all(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    let m = load_machine(&s, &c, &app, &id).await?;
    Ok(Json(m.config.metadata.unwrap_or_default()))
}

async fn show_one(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id, key)): Path<(String, String, String)>,
) -> Result<Json<MetadataValue>, ApiError> {
    let m = load_machine(&s, &c, &app, &id).await?;
    let value = m
        .config
        .metadata
        .and_then(|md| md.get(&key).cloned())
        .ok_or_else(|| ApiError::not_found(format!("metadata key {key:?} not found")))?;
    Ok(Json(MetadataValue { value }))
}

async fn apply(
    s: &AppState,
    c: &Caller,
    app: &str,
    id: &str,
    changes: Vec<(String, Option<String>)>,
    machine_version: Option<String>,
) -> Result<StatusCode, ApiError> {
    for (k, _) in &changes {
        check_key(k)?;
    }
    let m = load_machine(s, c, app, id).await?;
    if m.state == MachineState::Destroyed {
        return Err(ApiError::not_found("machine not found"));
    }
    s.agent
        .set_metadata(&m.id, changes, machine_version)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_one(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id, key)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<MetadataValue>,
) -> Result<StatusCode, ApiError> {
    apply(&s, &c, &app, &id, vec![(key, Some(body.value))], None).await
}

async fn delete_one(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id, key)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    apply(&s, &c, &app, &id, vec![(key, None)], None).await
}

async fn update_many(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<MetadataUpdate>,
) -> Result<StatusCode, ApiError> {
    let changes = body.metadata.into_iter().collect();
    apply(&s, &c, &app, &id, changes, body.machine_version).await
}
