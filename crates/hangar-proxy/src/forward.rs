//! Sending a request on to a machine, with the headers Fly's proxy adds, and streaming
//! the answer back.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type Client = hyper_util::client::legacy::Client<HttpConnector, Body>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

fn set(req: &mut Request, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        req.headers_mut().insert(name, v);
    }
}

pub async fn forward(
    client: &Client,
    mut req: Request,
    target: SocketAddr,
    peer: SocketAddr,
    region: &str,
) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: Uri = match format!("http://{target}{path}").parse() {
        Ok(u) => u,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("bad request path: {e}\n")).into_response()
        }
    };
    *req.uri_mut() = uri;
    let port = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.rsplit_once(':').map(|(_, p)| p.to_string()))
        .unwrap_or_else(|| "80".into());
    let forwarded_for = match req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    set(&mut req, "fly-client-ip", &peer.ip().to_string());
    set(&mut req, "x-forwarded-for", &forwarded_for);
    set(&mut req, "x-forwarded-proto", "http");
    set(&mut req, "x-forwarded-port", &port);
    set(&mut req, "x-forwarded-ssl", "off");
    set(&mut req, "fly-forwarded-port", &port);
    set(&mut req, "fly-region", region);
    set(
        &mut req,
        "fly-request-id",
        &format!("{}-{region}", ulid::Ulid::new()),
    );
    set(&mut req, "via", "1.1 hangar");
    match client.request(req).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => {
            tracing::warn!(target = %target, error = %e, "machine did not answer");
            (
                StatusCode::BAD_GATEWAY,
                format!("the machine at {target} did not answer\n"),
            )
                .into_response()
        }
    }
}
