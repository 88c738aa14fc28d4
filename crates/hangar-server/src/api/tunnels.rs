//! `GET /v1/apps/{app}/proxy?host=&port=`: the API's side of `hangar proxy`. Asked
//! plainly, it says where `host` leads on the app's private network (so the CLI can
//! refuse a forward that cannot work before it listens); asked with `Connection:
//! upgrade` and `Upgrade: hangar-tunnel`, it dials `host:port` through the host's
//! agent and, once connected, becomes a byte stream to it. One tunnel carries one
//! connection, so a forward has as many as its clients open.
//!
//! `host` is a private name of the app's org (`<app>.internal`, `<id>.vm.<app>.internal`,
//! `<region>.<app>.internal`, ...), a bare machine id of the app, or a 6PN address of the
//! org; the default is `<app>.internal`. Names and addresses of other orgs are out of
//! reach (the agent resolves only within the app's network).

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use hangar_agent::api::OpError;
use hangar_agent::tunnel::{self, PrivateTarget};
use serde_json::json;

use super::apps::load_app;
use super::{ApiError, Params};
use crate::auth::Caller;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/apps/{app}/proxy", get(proxy))
}

/// The name `host` means for `app`: the app's own name by default, a machine id as
/// that machine's name.
fn private_host(app: &str, host: Option<&str>) -> String {
    match host.map(str::trim).filter(|h| !h.is_empty()) {
        None => format!("{app}.internal"),
        Some(h) if h.len() == 14 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("{}.vm.{app}.internal", h.to_ascii_lowercase())
        }
        Some(h) => h.to_string(),
    }
}

fn port_of(q: &Params) -> Result<u16, ApiError> {
    let raw = q
        .get("port")
        .ok_or_else(|| ApiError::invalid("port is required: the port on the private host"))?;
    raw.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::invalid(format!("port must be between 1 and 65535, got {raw:?}")))
}

/// A dial that found no listener, or nothing to dial, is the private host's fault, not
/// the request's.
fn dial_error(e: OpError) -> ApiError {
    match e {
        OpError::Precondition(m) => ApiError::new(StatusCode::BAD_GATEWAY, m),
        e => e.into(),
    }
}

async fn proxy(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(app): Path<String>,
    q: Params,
    mut request: Request,
) -> Result<Response, ApiError> {
    let app = load_app(&s, &c, &app).await?;
    let port = port_of(&q)?;
    let host = private_host(&app.name, q.get("host"));
    let org = u16::try_from(app.org_numeric_id)
        .map_err(|_| ApiError::internal("the app's org has no private network number"))?;
    if !tunnel::wants_tunnel(request.headers()) {
        let addresses = s
            .agent
            .api()
            .resolve_private(org, &host)
            .await
            .map_err(dial_error)?;
        return Ok(
            Json(json!({ "host": host, "port": port, "addresses": addresses })).into_response(),
        );
    }
    let target = PrivateTarget { org, host, port };
    let stream = s
        .agent
        .api()
        .dial_private(&target)
        .await
        .map_err(dial_error)?;
    tracing::info!(app = %app.name, host = %target.host, port, "private tunnel opened");
    Ok(tunnel::splice(&mut request, stream))
}

#[cfg(test)]
mod tests {
    use super::private_host;

    #[test]
    fn hosts_default_to_the_app_and_machine_ids_to_their_names() {
        assert_eq!(private_host("db", None), "db.internal");
        assert_eq!(private_host("db", Some(" ")), "db.internal");
        assert_eq!(
            private_host("db", Some("3D8D9E1B5E6F78")),
            "3d8d9e1b5e6f78.vm.db.internal"
        );
        assert_eq!(
            private_host("db", Some("iad.db.internal")),
            "iad.db.internal"
        );
    }
}
