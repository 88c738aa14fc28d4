//! `/v1/orgs/{org}/wireguard_peers`: the org's WireGuard peers, as `hangar wireguard
//! create|list|remove` uses them (Fly's `addWireGuardPeer` and friends, over REST).
//! The caller's token must be of the org.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use hangar_types::wireguard::{CreatePeerRequest, WireguardPeer, WireguardPeers};

use super::{ApiError, JsonBody};
use crate::auth::Caller;
use crate::{wireguard, AppState};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/orgs/{org}/wireguard_peers", get(list).post(create))
        .route("/orgs/{org}/wireguard_peers/{name}", delete(remove))
}

/// The org's number, once the caller is known to be of it.
async fn org_of(s: &AppState, c: &Caller, org: &str) -> Result<u16, ApiError> {
    let slug = org.to_string();
    let found = s.store.call(move |db| db.org(&slug)).await?;
    match found {
        Some(o) if o.slug == c.token.org_slug => Ok((o.numeric_id & 0xffff) as u16),
        _ => Err(ApiError::not_found(format!(
            "org {org} not found: your token is for org {}",
            c.token.org_slug
        ))),
    }
}

/// The host (and port) the caller reached the API at.
fn api_host(headers: &HeaderMap) -> &str {
    headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
}

async fn list(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Result<Json<WireguardPeers>, ApiError> {
    let number = org_of(&s, &c, &org).await?;
    let peers = wireguard::list(&s, &org, number, api_host(&headers)).await?;
    Ok(Json(WireguardPeers { peers }))
}

async fn create(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(org): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreatePeerRequest>,
) -> Result<(StatusCode, Json<WireguardPeer>), ApiError> {
    let number = org_of(&s, &c, &org).await?;
    let peer = wireguard::create(
        &s,
        &org,
        number,
        body.name.trim(),
        body.region.trim(),
        body.public_key.trim(),
        api_host(&headers),
    )
    .await?;
    tracing::info!(org = %org, peer = %peer.name, by = %c.owner(), "WireGuard peer added");
    Ok((StatusCode::CREATED, Json(peer)))
}

async fn remove(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((org, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    org_of(&s, &c, &org).await?;
    wireguard::remove(&s, &org, &name).await?;
    tracing::info!(org = %org, peer = %name, by = %c.owner(), "WireGuard peer removed");
    Ok(StatusCode::NO_CONTENT)
}
