//! One HTTP request through the proxy: ACME HTTP-01 answers, the app from the address or
//! the `Host` header, `force_https`, routing headers, the machine chosen by `route`, and
//! the request sent on by `forward` — once when its body cannot be kept, else through
//! `replay`, which also retries refused connections. Errors become short text answers
//! with Fly's statuses.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::forward::{self, ForwardError, Origin};
use crate::instance::{Entry, Handler};
use crate::route::{self, RouteError, Want};
use crate::Inner;
use crate::{pool, replay};

/// Bodies up to this size are kept so the request can be replayed (Fly: 1 MB).
pub const REPLAY_BODY_LIMIT: u64 = 1024 * 1024;

/// How a connection reached the proxy.
#[derive(Debug, Clone)]
pub struct Conn {
    pub origin: Origin,
    /// The app whose own address took the connection; `None` on the edge listeners.
    pub app: Option<String>,
    pub entry: Entry,
}

pub fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut resp = Response::new(Body::from(message.into() + "\n"));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

pub fn route_error(e: &RouteError) -> Response<Body> {
    let status = match e {
        RouteError::NoApp(_) | RouteError::NoMachine { .. } => StatusCode::NOT_FOUND,
        RouteError::StartTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        RouteError::NotServing(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    text(status, e.to_string())
}

pub fn forward_error(e: &ForwardError) -> Response<Body> {
    let status = match e {
        ForwardError::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
        ForwardError::Failed(..) | ForwardError::Connect(..) | ForwardError::Stale(..) => {
            StatusCode::BAD_GATEWAY
        }
    };
    text(status, e.to_string())
}

/// The app a `Host` names: `<app>.<app_domain>`, or a hostname it holds a certificate for.
fn app_of_host(inner: &Inner, host: &str) -> Option<String> {
    let name = host
        .rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    crate::app_of(name, &inner.config.app_domain).or_else(|| inner.certs.app_of(name))
}

fn host_of(req: &Request<Body>) -> String {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// Whether any machine of `app` forces HTTPS on the port this request came in on.
fn forces_https(inner: &Inner, app: &str, entry: Entry) -> bool {
    let set = inner.instances.borrow().clone();
    set.get(app).is_some_and(|list| {
        list.iter().any(|i| {
            i.services
                .iter()
                .filter_map(|s| s.port(entry))
                .any(|p| p.force_https && p.has(&Handler::Http))
        })
    })
}

/// A 301 to the HTTPS URL: the edge's HTTPS port for the edge listeners, 443 on an
/// app's own address.
fn https_redirect(inner: &Inner, conn: &Conn, host: &str, req: &Request<Body>) -> Response<Body> {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let edge_port = if conn.app.is_some() {
        None
    } else {
        inner.config.https_port
    };
    let port = match edge_port {
        Some(443) | None => String::new(),
        Some(p) => format!(":{p}"),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut resp = text(
        StatusCode::MOVED_PERMANENTLY,
        format!("https://{name}{port}{path}"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("https://{name}{port}{path}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

pub async fn handle(
    inner: Arc<Inner>,
    conn: Arc<Conn>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let req = req.map(Body::new);
    let request_id = format!("{}-{}", ulid::Ulid::new(), inner.config.region);
    let mut resp = respond(&inner, &conn, req, &request_id).await;
    let headers = resp.headers_mut();
    headers.insert(header::VIA, HeaderValue::from_static("1.1 hangar"));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("fly-request-id", v);
    }
    headers
        .entry(header::SERVER)
        .or_insert(HeaderValue::from_static("Hangar"));
    Ok(resp)
}

async fn respond(
    inner: &Inner,
    conn: &Conn,
    req: Request<Body>,
    request_id: &str,
) -> Response<Body> {
    if let Some(answer) = acme_answer(inner, &req) {
        return answer;
    }
    let host = host_of(&req);
    let app = match conn.app.clone().or_else(|| app_of_host(inner, &host)) {
        Some(app) => app,
        None => {
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "no app is served at {host:?}; use <app>.{} or a hostname with a certificate",
                    inner.config.app_domain
                ),
            )
        }
    };
    if !conn.origin.tls && forces_https(inner, &app, conn.entry) {
        return https_redirect(inner, conn, &host, &req);
    }
    let mut req = req;
    let want = routing_want(inner, &app, conn.entry, &mut req);
    if forward::is_upgrade(&req) || !keeps_body(&req) {
        return once(inner, conn, req, &want, request_id).await;
    }
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}"),
            )
        }
    };
    let template = Request::from_parts(parts, ());
    replay::replaying(inner, conn, template, body, want, request_id).await
}

/// The answer to an ACME HTTP-01 challenge for a certificate being issued, if the
/// request is one: the key authorization, exactly, with no trailing newline.
fn acme_answer(inner: &Inner, req: &Request<Body>) -> Option<Response<Body>> {
    let token = req
        .uri()
        .path()
        .strip_prefix("/.well-known/acme-challenge/")?;
    let answer = inner.certs.http_challenge(token)?;
    Some(text(StatusCode::OK, "").map(|_| Body::from(answer)))
}

/// The machine of `app` the request asks for with Fly's routing headers:
/// `fly-force-instance-id`, else `fly-prefer-instance-id` when that machine serves (when
/// it does not, the request is marked `fly-preferred-instance-unavailable`), and
/// `fly-force-region` or `fly-prefer-region` (which may fall back to any region).
fn routing_want(inner: &Inner, app: &str, entry: Entry, req: &mut Request<Body>) -> Want {
    let mut want = Want::app(app, entry);
    want.instance = req
        .headers()
        .get("fly-force-instance-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(preferred) = req
        .headers()
        .get("fly-prefer-instance-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    {
        let available = route::machine_serves(inner, app, &preferred);
        if available && want.instance.is_none() {
            want.instance = Some(preferred);
        } else if let Ok(v) = HeaderValue::from_str(&preferred) {
            req.headers_mut()
                .insert("fly-preferred-instance-unavailable", v);
        }
    }
    if let Some(regions) = req
        .headers()
        .get("fly-force-region")
        .or_else(|| req.headers().get("fly-prefer-region"))
        .and_then(|v| v.to_str().ok())
    {
        want.regions = regions.split(',').map(|r| r.trim().to_string()).collect();
        if req.headers().get("fly-force-region").is_none() {
            want.regions.push("any".into());
        }
    }
    want
}

/// Whether the request's body can be kept for a replay: it is empty, or its
/// `Content-Length` is within [`REPLAY_BODY_LIMIT`].
fn keeps_body(req: &Request<Body>) -> bool {
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let empty = http_body::Body::size_hint(req.body()).exact() == Some(0);
    empty || len.is_some_and(|l| l <= REPLAY_BODY_LIMIT)
}

/// Sends a request whose body cannot be kept: no replay is possible.
async fn once(
    inner: &Inner,
    conn: &Conn,
    mut req: Request<Body>,
    want: &Want,
    request_id: &str,
) -> Response<Body> {
    let mut refused = 0;
    let result = loop {
        let routed = match route::route(inner, want).await {
            Ok(r) => r,
            Err(e) => return route_error(&e),
        };
        match send_to(inner, conn, &mut req, routed, request_id).await {
            // Nothing was taken from the request yet: try again (the machine may be
            // starting, or going away).
            Err(ForwardError::Connect(..)) if refused < replay::CONNECT_RETRIES => {
                refused += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => break other,
        }
    };
    match result {
        Ok(resp) if resp.headers().contains_key("fly-replay") => text(
            StatusCode::BAD_GATEWAY,
            format!(
                "the machine asked for a replay, but requests with bodies over {REPLAY_BODY_LIMIT} bytes or upgrades cannot be replayed"
            ),
        ),
        Ok(resp) => resp,
        Err(e) => forward_error(&e),
    }
}

/// Connects to the routed machine (a `Connect` error leaves `req` untouched), then
/// prepares `req` and sends it; it stays counted against the machine (as it has been
/// since it was picked) until the answer has been passed on.
pub async fn send_to(
    inner: &Inner,
    conn: &Conn,
    req: &mut Request<Body>,
    routed: route::Routed,
    request_id: &str,
) -> Result<Response<Body>, ForwardError> {
    let route::Routed {
        target,
        load: guard,
    } = routed;
    let checkout = pool::checkout(target.addr)
        .await
        .map_err(|e| ForwardError::Connect(target.addr, e))?;
    forward::prepare(req, &conn.origin, &inner.config.region, request_id);
    let req = std::mem::replace(req, Request::new(Body::empty()));
    forward::send(
        req,
        checkout,
        target.addr,
        inner.config.response_timeout,
        guard,
        inner.egress.counter(&target.instance.app),
    )
    .await
}
