//! One HTTP request through the proxy: ACME HTTP-01 answers, the app from the address or
//! the `Host` header, `force_https`, routing headers, the machine chosen by `route`, the
//! request sent on by `forward`, and `fly-replay` carried out (up to ten replays, for
//! bodies the proxy could keep). Errors become short text answers with Fly's statuses.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::forward::{self, ForwardError, Origin};
use crate::instance::{Entry, Handler};
use crate::replay::{self, MAX_REPLAYS};
use crate::route::{self, RouteError, Want};
use crate::Inner;

/// How often a kept request is sent elsewhere when a machine refuses the connection.
const CONNECT_RETRIES: usize = 5;

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

fn route_error(e: &RouteError) -> Response<Body> {
    let status = match e {
        RouteError::NoApp(_) | RouteError::NoMachine { .. } => StatusCode::NOT_FOUND,
        RouteError::StartTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    text(status, e.to_string())
}

fn forward_error(e: &ForwardError) -> Response<Body> {
    let status = match e {
        ForwardError::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
        ForwardError::Failed(..) | ForwardError::Connect(..) => StatusCode::BAD_GATEWAY,
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

fn https_redirect(inner: &Inner, host: &str, req: &Request<Body>) -> Response<Body> {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let port = match inner.config.https_port {
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
    if let Some(token) = req
        .uri()
        .path()
        .strip_prefix("/.well-known/acme-challenge/")
    {
        if let Some(answer) = inner.certs.http_challenge(token) {
            // The key authorization, exactly, with no trailing newline.
            return text(StatusCode::OK, "").map(|_| Body::from(answer));
        }
    }
    let host = host_of(&req);
    let app = match &conn.app {
        Some(app) => app.clone(),
        None => match app_of_host(inner, &host) {
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
        },
    };
    if !conn.origin.tls && forces_https(inner, &app, conn.entry) {
        return https_redirect(inner, &host, &req);
    }
    let mut want = Want::app(&app, conn.entry);
    want.instance = req
        .headers()
        .get("fly-force-instance-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut req = req;
    if let Some(preferred) = req
        .headers()
        .get("fly-prefer-instance-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    {
        let available = inner
            .instances
            .borrow()
            .get(&app)
            .is_some_and(|l| l.iter().any(|i| i.machine_id == preferred && i.can_serve()));
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
    if forward::is_upgrade(&req) {
        return once(inner, conn, req, &want, request_id).await;
    }
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let empty = http_body::Body::size_hint(req.body()).exact() == Some(0);
    if !(empty || len.is_some_and(|l| l <= REPLAY_BODY_LIMIT)) {
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
    replaying(inner, conn, &template, body, want, request_id).await
}

/// Sends a request whose body cannot be kept: no replay is possible.
async fn once(
    inner: &Inner,
    conn: &Conn,
    mut req: Request<Body>,
    want: &Want,
    request_id: &str,
) -> Response<Body> {
    let target = match route::route(inner, want).await {
        Ok(t) => t,
        Err(e) => return route_error(&e),
    };
    match send_to(inner, conn, &mut req, &target, request_id).await {
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

/// Prepares `req` for the target machine and sends it, counted against the machine.
async fn send_to(
    inner: &Inner,
    conn: &Conn,
    req: &mut Request<Body>,
    target: &route::Target,
    request_id: &str,
) -> Result<Response<Body>, ForwardError> {
    forward::prepare(req, &conn.origin, &inner.config.region, request_id);
    let guard = inner.load.enter(&target.instance.machine_id);
    let req = std::mem::replace(req, Request::new(Body::empty()));
    forward::send(req, target.addr, inner.config.response_timeout, guard).await
}

fn copy_of(template: &Request<()>, body: Bytes) -> Request<Body> {
    let mut req = Request::new(Body::from(body));
    *req.method_mut() = template.method().clone();
    *req.uri_mut() = template.uri().clone();
    *req.version_mut() = template.version();
    *req.headers_mut() = template.headers().clone();
    req
}

/// Sends a kept request, and again wherever each `fly-replay` answer says.
async fn replaying(
    inner: &Inner,
    conn: &Conn,
    template: &Request<()>,
    body: Bytes,
    mut want: Want,
    request_id: &str,
) -> Response<Body> {
    let mut replay_src: Option<String> = None;
    let mut connect_failures = 0;
    let mut replays = 0;
    while replays <= MAX_REPLAYS {
        let target = match route::route(inner, &want).await {
            Ok(t) => t,
            Err(e) => return route_error(&e),
        };
        let mut req = copy_of(template, body.clone());
        if let Some(src) = &replay_src {
            if let Ok(v) = HeaderValue::from_str(src) {
                req.headers_mut().insert("fly-replay-src", v);
            }
        }
        let resp = match send_to(inner, conn, &mut req, &target, request_id).await {
            Ok(r) => r,
            // Nothing reached the machine (it is stopping, or not listening yet): the
            // kept request goes to another machine, as Fly's proxy retries.
            Err(ForwardError::Connect(addr, cause)) if connect_failures < CONNECT_RETRIES => {
                tracing::debug!(%addr, %cause, "retrying on another machine");
                connect_failures += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return forward_error(&e),
        };
        replays += 1;
        let Some(value) = resp.headers().get("fly-replay").cloned() else {
            return resp;
        };
        let instructions = match value
            .to_str()
            .map_err(|e| e.to_string())
            .and_then(replay::parse)
        {
            Ok(r) => r,
            Err(e) => {
                return text(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "machine {} answered with an invalid fly-replay: {e}",
                        target.instance.machine_id
                    ),
                )
            }
        };
        let app = instructions.app.clone().unwrap_or_else(|| want.app.clone());
        if !inner.instances.borrow().contains_key(&app) {
            return text(
                StatusCode::BAD_GATEWAY,
                format!("fly-replay names app {app:?}, which has no machines"),
            );
        }
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let mut src = format!(
            "instance={};region={};t={micros}",
            target.instance.machine_id, target.instance.region
        );
        if let Some(state) = &instructions.state {
            src.push_str(&format!(";state={state}"));
        }
        replay_src = Some(src);
        want = Want {
            app,
            entry: want.entry,
            regions: instructions.regions.clone(),
            instance: instructions.instance.clone(),
            exclude: instructions
                .elsewhere
                .then(|| target.instance.machine_id.clone()),
        };
        if let Some(preferred) = &instructions.prefer_instance {
            let available = inner.instances.borrow().get(&want.app).is_some_and(|l| {
                l.iter()
                    .any(|i| i.machine_id == *preferred && i.can_serve())
            });
            if available {
                want.instance = Some(preferred.clone());
            }
        }
    }
    text(
        StatusCode::BAD_GATEWAY,
        format!("the request was replayed more than {MAX_REPLAYS} times; giving up"),
    )
}
