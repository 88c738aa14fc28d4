//! `POST /v1/apps/{app}/builds`: the body is a build context (tar.gz); the answer
//! streams the build's output as NDJSON `BuildEvent`s, ending with the pushed image or
//! why the build failed. Query: `dockerfile`, `target`, `arg=NAME=VALUE` (repeatable),
//! `no_cache`, `label`.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use hangar_types::build::BuildEvent;

use super::apps::load_app;
use super::{ApiError, Params};
use crate::auth::Caller;
use crate::builds::BuildRequest;
use crate::AppState;

/// Largest build context accepted.
const MAX_CONTEXT: usize = 2 * 1024 * 1024 * 1024;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(
        "/apps/{app}/builds",
        post(build).layer(DefaultBodyLimit::max(MAX_CONTEXT)),
    )
}

async fn build(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    params: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the body must be the build context as a tar.gz; `hangar deploy` sends it",
        ));
    }
    let mut args = Vec::new();
    for a in params.all("arg") {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => args.push((k.to_string(), v.to_string())),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid build arg {a:?}: use NAME=VALUE"
                )))
            }
        }
    }
    let req = BuildRequest {
        dockerfile: params.get("dockerfile").unwrap_or("Dockerfile").to_string(),
        target: params
            .get("target")
            .map(str::to_string)
            .filter(|t| !t.is_empty()),
        args,
        no_cache: params.flag("no_cache")?,
        label: params
            .get("label")
            .map(str::to_string)
            .filter(|l| !l.is_empty()),
    };
    let rx = state.builder.start(&app.name, body, req);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let e: BuildEvent = rx.recv().await?;
        let mut line = serde_json::to_vec(&e).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(line)), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}
