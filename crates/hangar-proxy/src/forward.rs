//! Sending one request on to a machine over HTTP/1.1: the headers Fly's proxy adds,
//! hop-by-hop headers removed, a bounded wait for the answer, and — for `Upgrade`
//! requests such as WebSockets — splicing the two upgraded connections together. The
//! bytes a machine sends back are counted as its app's egress.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::uri::PathAndQuery;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, Version};
use hyper_util::rt::TokioIo;

use crate::load::LoadGuard;
use crate::pool;

/// How the client reached the proxy, for the forwarding headers (rendered once per
/// connection, not per request).
#[derive(Debug, Clone)]
pub struct Origin {
    pub peer: SocketAddr,
    pub tls: bool,
    peer_ip: HeaderValue,
    local_port: HeaderValue,
}

impl Origin {
    pub fn new(peer: SocketAddr, local: SocketAddr, tls: bool) -> Origin {
        let render = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""));
        Origin {
            peer_ip: render(peer.ip().to_string()),
            local_port: render(local.port().to_string()),
            peer,
            tls,
        }
    }
}

/// Why a machine gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("the machine at {0} did not answer: {1}")]
    Failed(SocketAddr, String),
    /// Nothing was sent: the machine refused or did not take the connection.
    #[error("could not connect to the machine at {0}: {1}")]
    Connect(SocketAddr, String),
    /// Nothing reached the machine: a pooled connection it had closed.
    #[error("the connection to the machine at {0} had closed: {1}")]
    Stale(SocketAddr, String),
    #[error("the machine at {0} did not answer within {1:?}")]
    Timeout(SocketAddr, Duration),
}

/// Headers that describe one connection and are not passed on (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .filter(|n| !(keep_upgrade && n == "upgrade"))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        if keep_upgrade && (name == "upgrade" || name == "connection") {
            continue;
        }
        headers.remove(name);
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// Whether the request asks to switch protocols (WebSocket and the like).
pub fn is_upgrade(req: &Request<Body>) -> bool {
    req.version() == Version::HTTP_11 && req.headers().contains_key(header::UPGRADE)
}

/// Rewrites `req` for a machine and adds Fly's request headers.
pub fn prepare(req: &mut Request<Body>, origin: &Origin, region: &str, request_id: &str) {
    let upgrade = is_upgrade(req);
    let authority = req.uri().authority().map(|a| a.to_string());
    // Origin form (`/path?query`), as a machine expects on its own connection.
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    if !headers.contains_key(header::HOST) {
        if let Some(a) = authority {
            set(headers, "host", &a);
        }
    }
    if !headers.contains_key("x-forwarded-port") {
        let intended = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.rsplit_once(':').map(|(_, p)| p))
            .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            .and_then(|p| HeaderValue::from_str(p).ok())
            .unwrap_or(HeaderValue::from_static(if origin.tls {
                "443"
            } else {
                "80"
            }));
        headers.insert(HeaderName::from_static("x-forwarded-port"), intended);
    }
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => HeaderValue::from_str(&format!("{prior}, {}", origin.peer.ip()))
            .unwrap_or_else(|_| origin.peer_ip.clone()),
        None => origin.peer_ip.clone(),
    };
    let fixed = |v: &'static str| HeaderValue::from_static(v);
    for (name, value) in [
        ("fly-client-ip", origin.peer_ip.clone()),
        ("x-forwarded-for", forwarded_for),
        (
            "x-forwarded-proto",
            fixed(if origin.tls { "https" } else { "http" }),
        ),
        (
            "x-forwarded-ssl",
            fixed(if origin.tls { "on" } else { "off" }),
        ),
        ("fly-forwarded-port", origin.local_port.clone()),
        ("via", fixed("1.1 hangar")),
    ] {
        headers.insert(HeaderName::from_static(name), value);
    }
    set(headers, "fly-region", region);
    set(headers, "fly-request-id", request_id);
}

/// Sends `req` and waits up to `timeout` for the answer's head; the body then streams,
/// its bytes counted in `egress`.
pub async fn send(
    mut req: Request<Body>,
    checkout: pool::Checkout,
    target: SocketAddr,
    timeout: Duration,
    guard: LoadGuard,
    egress: Arc<AtomicU64>,
) -> Result<Response<Body>, ForwardError> {
    let client_upgrade = is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    let mut sender = checkout.sender;
    let mut resp = match tokio::time::timeout(timeout, sender.send_request(req)).await {
        Err(_) => return Err(ForwardError::Timeout(target, timeout)),
        Ok(Err(e)) => {
            let mut cause = e.to_string();
            if let Some(src) = std::error::Error::source(&e) {
                cause = format!("{cause}: {src}");
            }
            // A reused connection the machine had closed: the request never left.
            return Err(
                if e.is_canceled() || (checkout.reused && e.is_incomplete_message()) {
                    ForwardError::Stale(target, cause)
                } else {
                    ForwardError::Failed(target, cause)
                },
            );
        }
        Ok(Ok(resp)) => resp,
    };
    if resp.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let machine_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                // The connection counts against the machine for as long as it lives.
                let _counted = guard;
                let (Ok(client), Ok(machine)) = tokio::join!(client_upgrade, machine_upgrade)
                else {
                    return;
                };
                let mut client = TokioIo::new(client);
                let mut machine = TokioIo::new(machine);
                if let Ok((_, out)) = tokio::io::copy_bidirectional(&mut client, &mut machine).await
                {
                    egress.fetch_add(out, Ordering::Relaxed);
                }
            });
            return Ok(resp.map(|_| Body::empty()));
        }
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Ok(Response::from_parts(
        parts,
        Body::new(Counted {
            body,
            _guard: guard,
            connection: Some((target, sender)),
            egress,
        }),
    ))
}

/// A machine's answer that counts against the machine until it has been passed on whole
/// (or the client went away); then its connection goes back to the pool, if the answer
/// was read to the end.
struct Counted {
    body: hyper::body::Incoming,
    _guard: LoadGuard,
    connection: Option<(SocketAddr, hyper::client::conn::http1::SendRequest<Body>)>,
    /// The app's bytes out.
    egress: Arc<AtomicU64>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some((addr, sender)) = self.connection.take() {
            if http_body::Body::is_end_stream(&self.body) {
                pool::checkin(addr, sender);
            }
        }
    }
}

impl http_body::Body for Counted {
    type Data = axum::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.egress.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
