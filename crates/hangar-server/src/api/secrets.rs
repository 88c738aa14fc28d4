//! `/v1/apps/{app}/secrets`: set, unset, list and show app secrets by name and digest
//! (machines-api.md §10). Values come in and never go out: not in answers, not in
//! errors (a malformed body is described by position only), not in logs.
//!
//! Restarting machines with new values is a deploy's job (the CLI asks for one).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use hangar_store::SecretRecord;
use hangar_types::secrets::{
    AppSecret, AppSecrets, SecretDeleted, SecretSet, SecretValue, SecretsUpdate, SecretsUpdated,
};
use serde::de::DeserializeOwned;

use super::apps::load_app;
use super::{ApiError, Params};
use crate::auth::Caller;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps/{app}/secrets", get(list).post(update))
        .route(
            "/apps/{app}/secrets/{name}",
            get(show).post(set_one).delete(delete_one),
        )
}

fn view(r: SecretRecord) -> AppSecret {
    AppSecret {
        name: r.name,
        digest: r.digest,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// Parses a body that holds secret values: errors say where, never what.
fn parse_values<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid_argument: malformed body at line {} column {}: send {{\"values\": {{\"NAME\": \"value\", \"OTHER\": null}}}} with string values (null unsets)",
            e.line(),
            e.column()
        ))
    })
}

/// `min_version`: this server always has every version it has answered with.
fn check_min_version(params: &Params, current: i64) -> Result<(), ApiError> {
    if let Some(v) = params.get("min_version") {
        let min: i64 = v.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid_argument: min_version {v:?} is not a number"
            ))
        })?;
        if min > current {
            return Err(ApiError::bad_request(format!(
                "invalid_argument: min_version {min} is newer than the app's secrets version {current}"
            )));
        }
    }
    Ok(())
}

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    params: Params,
) -> Result<Json<AppSecrets>, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let (records, version) = state.vault.list(&app.name).await?;
    check_min_version(&params, version)?;
    Ok(Json(AppSecrets {
        secrets: records.into_iter().map(view).collect(),
    }))
}

async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, name)): Path<(String, String)>,
    params: Params,
) -> Result<Json<AppSecret>, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let (records, version) = state.vault.list(&app.name).await?;
    check_min_version(&params, version)?;
    records
        .into_iter()
        .find(|r| r.name == name)
        .map(|r| Json(view(r)))
        .ok_or_else(|| ApiError::not_found(format!("secret {name} not found")))
}

async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Json<SecretsUpdated>, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let body: SecretsUpdate = parse_values(&body)?;
    if body.values.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_argument: values is empty: name at least one secret to set or unset",
        ));
    }
    let version = state.vault.change(&app.name, body.values).await?;
    let (records, _) = state.vault.list(&app.name).await?;
    Ok(Json(SecretsUpdated {
        secrets: records.into_iter().map(view).collect(),
        version,
        version_deprecated: version,
    }))
}

async fn set_one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<(StatusCode, Json<SecretSet>), ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let body: SecretValue = parse_values(&body)?;
    let Some(value) = body.value else {
        return Err(ApiError::bad_request(
            "invalid_argument: value is required: send {\"value\": \"...\"}",
        ));
    };
    let version = state
        .vault
        .change(&app.name, BTreeMap::from([(name.clone(), Some(value))]))
        .await?;
    let (records, _) = state.vault.list(&app.name).await?;
    let record = records
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ApiError::internal("secret missing right after it was set"))?;
    Ok((
        StatusCode::CREATED,
        Json(SecretSet {
            secret: view(record),
            version,
            version_deprecated: version,
        }),
    ))
}

async fn delete_one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, name)): Path<(String, String)>,
) -> Result<Json<SecretDeleted>, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let version = state
        .vault
        .change(&app.name, BTreeMap::from([(name, None)]))
        .await?;
    Ok(Json(SecretDeleted {
        version,
        version_deprecated: version,
    }))
}
