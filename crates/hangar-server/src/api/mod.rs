//! The Machines API under `/v1`: routes, the error type every handler returns, the JSON
//! body extractor and the query parser that accept what real Fly clients send.
//!
//! Handlers read from the store and send commands to the host's agent through its typed
//! interface (`hangar_agent::api::Agent`); they never change a machine's state
//! themselves. Routes are grouped by resource in the submodules.

mod actions;
mod agent;
mod apps;
mod billing;
mod builds;
mod certificates;
mod console;
mod deploys;
mod errors;
pub mod idempotency;
mod ips;
mod leases;
mod logs;
mod machines;
mod metadata;
mod orgs;
mod query;
mod secrets;
mod tokens;
mod tunnels;
mod volumes;
mod wireguard;

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::{ids, AppState};

pub use errors::ApiError;
pub use query::Params;

/// Builds the whole HTTP router; tests can drive it without a socket.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .merge(apps::routes(&state))
        .merge(machines::routes(&state))
        .merge(actions::routes())
        .merge(leases::routes(&state))
        .merge(metadata::routes())
        .merge(logs::routes())
        .merge(tokens::routes())
        .merge(ips::routes())
        .merge(certificates::routes())
        .merge(secrets::routes())
        .merge(deploys::routes())
        .merge(builds::routes())
        .merge(billing::routes())
        .merge(volumes::routes(&state))
        .merge(tunnels::routes())
        .merge(console::routes())
        .merge(wireguard::routes())
        .merge(orgs::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_token,
        ));
    Router::new()
        .merge(agent::routes())
        .nest("/v1", v1)
        .route("/healthz", get(|| async { "ok" }))
        .route("/", post(not_found).get(not_found))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("not found: no such route; the Machines API lives under /v1")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

/// Adds `fly-request-id` to every response, as Fly does.
async fn request_id(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&ids::ulid()) {
        res.headers_mut().insert("fly-request-id", v);
    }
    res
}

/// A JSON body. An empty body reads as `{}` (fly-go sends none on many POSTs); a
/// malformed one is a 400 with Fly's error body naming what was wrong.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                ApiError::bad_request(format!("invalid_argument: cannot read body: {e}"))
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = if bytes.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        bytes
    };
    serde_json::from_slice(text).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid_argument: malformed JSON body: {e}; send a JSON object as described in the Machines API"
        ))
    })
}
