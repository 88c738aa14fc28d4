//! `GET /v1/tokens/current`: who the caller's token is (machines-api.md §13.3).

use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use super::ApiError;
use crate::auth::Caller;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/tokens/current", get(current))
}

async fn current(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let slug = c.token.org_slug.clone();
    let org = s.store.call(move |db| db.org(&slug)).await?;
    let org_name = org.map(|o| o.name).unwrap_or_default();
    Ok(Json(json!({
        "tokens": [{
            "token_id": c.token.id,
            "name": c.token.name,
            "org_slug": c.token.org_slug,
            "organization": org_name,
            "apps": [],
            "user": c.owner(),
            "restricted_to_machine": "",
            "source_machine_id": "",
        }]
    })))
}
