//! `fly-replay`: a machine answers with a `fly-replay` header (`;`-separated
//! `key=value` pairs, values with commas quoted) or a body of type
//! `application/vnd.fly.replay+json`, and the proxy delivers the original request again
//! — to another region, machine or app, optionally with its path and headers
//! transformed, bounded by a timeout, with a fallback to the replaying machine. This
//! module parses the instructions and carries them out for kept requests.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use serde::Deserialize;

use crate::forward::ForwardError;
use crate::http::{forward_error, route_error, send_to, text, Conn};
use crate::route::{self, RouteError, Routed, Target, Want};
use crate::Inner;

/// Fly's limit on replays of one request.
pub const MAX_REPLAYS: usize = 10;
/// How often (every 50 ms, so for up to 2 s) a request is sent again when its machine
/// refuses the connection.
pub const CONNECT_RETRIES: usize = 40;
/// The content type of a replay given as a body.
const REPLAY_JSON: &str = "application/vnd.fly.replay+json";
/// The largest replay body read.
const REPLAY_JSON_LIMIT: usize = 64 * 1024;

/// Where a failed replay goes instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Back to the machine that replayed; an error if it is gone.
    ForceSelf,
    /// That machine, else any machine of its app.
    PreferSelf,
}

/// Changes made to the request before it is replayed (JSON form only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transform {
    pub path: Option<String>,
    pub delete_headers: Vec<String>,
    pub set_headers: Vec<(String, String)>,
}

/// Parsed replay instructions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    pub regions: Vec<String>,
    pub instance: Option<String>,
    pub prefer_instance: Option<String>,
    pub app: Option<String>,
    pub state: Option<String>,
    pub elsewhere: bool,
    pub timeout: Option<Duration>,
    pub fallback: Option<Fallback>,
    pub transform: Transform,
}

/// Splits on `;` outside double quotes.
fn fields(header: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in header.chars() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn regions(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn duration(value: &str) -> Result<Duration, String> {
    let v = value.trim();
    let parsed = if let Some(ms) = v.strip_suffix("ms") {
        ms.parse::<u64>().map(Duration::from_millis)
    } else if let Some(s) = v.strip_suffix('s') {
        s.parse::<u64>().map(Duration::from_secs)
    } else {
        v.parse::<u64>().map(Duration::from_secs)
    };
    parsed.map_err(|_| format!("timeout {v:?} is not a duration like 10s or 800ms"))
}

fn fallback(value: &str) -> Result<Fallback, String> {
    match value.trim() {
        "force_self" => Ok(Fallback::ForceSelf),
        "prefer_self" => Ok(Fallback::PreferSelf),
        other => Err(format!(
            "fallback {other:?} is neither force_self nor prefer_self"
        )),
    }
}

fn check(r: Replay) -> Result<Replay, String> {
    if r.regions.is_empty()
        && r.instance.is_none()
        && r.prefer_instance.is_none()
        && r.app.is_none()
        && !r.elsewhere
    {
        return Err("names no region, instance, app or elsewhere".into());
    }
    Ok(r)
}

/// Parses a `fly-replay` header; the error says which part is wrong.
pub fn parse(header: &str) -> Result<Replay, String> {
    let mut r = Replay::default();
    for field in fields(header) {
        let field = field.trim();
        if field.is_empty() {
            continue;
        }
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("{field:?} is not key=value"))?;
        let value = value.trim().to_string();
        match key.trim().to_ascii_lowercase().as_str() {
            "region" => r.regions = regions(&value),
            "instance" => r.instance = Some(value),
            "prefer_instance" => r.prefer_instance = Some(value),
            "app" => r.app = Some(value),
            "state" => r.state = Some(value),
            "elsewhere" => r.elsewhere = value.eq_ignore_ascii_case("true"),
            "timeout" => r.timeout = Some(duration(&value)?),
            "fallback" => r.fallback = Some(fallback(&value)?),
            other => return Err(format!("unknown field {other:?}")),
        }
    }
    check(r)
}

#[derive(Deserialize)]
struct JsonHeader {
    name: String,
    value: String,
}

#[derive(Deserialize, Default)]
struct JsonTransform {
    path: Option<String>,
    #[serde(default)]
    delete_headers: Vec<String>,
    #[serde(default)]
    set_headers: Vec<JsonHeader>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonReplay {
    region: Option<String>,
    instance: Option<String>,
    prefer_instance: Option<String>,
    app: Option<String>,
    state: Option<String>,
    #[serde(default)]
    elsewhere: bool,
    timeout: Option<String>,
    fallback: Option<String>,
    transform: Option<JsonTransform>,
    // Replay-cache settings are accepted; nothing is cached.
    #[serde(default)]
    #[allow(dead_code)]
    cache: Option<serde_json::Value>,
    #[serde(default)]
    #[allow(dead_code)]
    allow_bypass: Option<bool>,
}

/// Parses the JSON form of a replay.
pub fn parse_json(body: &[u8]) -> Result<Replay, String> {
    let j: JsonReplay =
        serde_json::from_slice(body).map_err(|e| format!("invalid replay JSON: {e}"))?;
    let transform = j.transform.unwrap_or_default();
    check(Replay {
        regions: j.region.as_deref().map(regions).unwrap_or_default(),
        instance: j.instance,
        prefer_instance: j.prefer_instance,
        app: j.app,
        state: j.state,
        elsewhere: j.elsewhere,
        timeout: j.timeout.as_deref().map(duration).transpose()?,
        fallback: j.fallback.as_deref().map(fallback).transpose()?,
        transform: Transform {
            path: transform.path,
            delete_headers: transform.delete_headers,
            set_headers: transform
                .set_headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
        },
    })
}

/// The replay a machine's answer asks for, if any.
async fn instructions(resp: Response<Body>) -> Option<Result<Replay, String>> {
    if let Some(value) = resp.headers().get("fly-replay") {
        return Some(value.to_str().map_err(|e| e.to_string()).and_then(parse));
    }
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(REPLAY_JSON));
    if !is_json {
        return None;
    }
    let limited = http_body_util::Limited::new(resp.into_body(), REPLAY_JSON_LIMIT);
    Some(match limited.collect().await {
        Ok(body) => parse_json(&body.to_bytes()),
        Err(e) => Err(format!("cannot read the replay body: {e}")),
    })
}

/// Whether an answer carries replay instructions (header or JSON body).
fn asks_replay(resp: &Response<Body>) -> bool {
    resp.headers().contains_key("fly-replay")
        || resp
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(REPLAY_JSON))
}

fn copy_of(template: &Request<()>, body: Bytes) -> Request<Body> {
    let mut req = Request::new(Body::from(body));
    *req.method_mut() = template.method().clone();
    *req.uri_mut() = template.uri().clone();
    *req.version_mut() = template.version();
    *req.headers_mut() = template.headers().clone();
    req
}

fn apply(template: &mut Request<()>, t: &Transform) -> Result<(), String> {
    if let Some(path) = &t.path {
        *template.uri_mut() = path
            .parse::<Uri>()
            .map_err(|e| format!("transform path {path:?}: {e}"))?;
    }
    for name in &t.delete_headers {
        template.headers_mut().remove(name.as_str());
    }
    for (name, value) in &t.set_headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("transform header name {name:?} is invalid"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("transform header value for {name} is invalid"))?;
        template.headers_mut().insert(name, value);
    }
    Ok(())
}

/// Whether the machine can still take requests.
fn serving(inner: &Inner, target: &Target) -> bool {
    let i = &target.instance;
    route::machine_serves(inner, &i.app, &i.machine_id)
}

fn micros_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// The bounds of a replay under way: how long it may take to route, and what it
/// falls back to when it cannot be.
struct Pending {
    fallback: Option<Fallback>,
    replayer: Target,
    timeout: Option<Duration>,
    since: Instant,
}

/// Routes `want`, within the replay's timeout; on failure, to its fallback.
async fn route_replay(
    inner: &Inner,
    want: &Want,
    pending: &Option<Pending>,
) -> Result<(Routed, Option<String>), RouteError> {
    let routed = match pending.as_ref().and_then(|p| p.timeout) {
        Some(t) => match tokio::time::timeout(t, route::route(inner, want)).await {
            Ok(r) => r.map_err(|e| (e, "no_candidate")),
            Err(_) => Err((RouteError::NoCandidate(want.app.clone()), "timeout")),
        },
        None => route::route(inner, want)
            .await
            .map_err(|e| (e, "no_candidate")),
    };
    let (error, reason) = match routed {
        Ok(t) => return Ok((t, None)),
        Err(failure) => failure,
    };
    let Some((p, fallback)) = pending.as_ref().and_then(|p| p.fallback.map(|f| (p, f))) else {
        return Err(error);
    };
    let me = &p.replayer.instance;
    let mut back = Want::app(&me.app, want.entry);
    back.instance = Some(me.machine_id.clone());
    let target = match (route::route(inner, &back).await, fallback) {
        (Ok(t), _) => t,
        (Err(e), Fallback::ForceSelf) => return Err(e),
        (Err(_), Fallback::PreferSelf) => {
            route::route(inner, &Want::app(&me.app, want.entry)).await?
        }
    };
    let failed = format!(
        "instance={};app={};region={};replay_source={};reason={reason};elapsed_ms={}",
        want.instance.as_deref().unwrap_or(""),
        want.app,
        want.regions.join(","),
        me.machine_id,
        p.since.elapsed().as_millis()
    );
    Ok((target, Some(failed)))
}

/// Sends a kept request, and again wherever each replay instruction says.
pub async fn replaying(
    inner: &Inner,
    conn: &Conn,
    mut template: Request<()>,
    body: Bytes,
    mut want: Want,
    request_id: &str,
) -> Response<Body> {
    let mut replay_src: Option<String> = None;
    let mut pending: Option<Pending> = None;
    let mut connect_failures = 0;
    let mut replays = 0;
    while replays <= MAX_REPLAYS {
        let (routed, failed) = match route_replay(inner, &want, &pending).await {
            Ok(t) => t,
            Err(e) => return route_error(&e),
        };
        let target = routed.target.clone();
        let mut req = copy_of(&template, body.clone());
        let extra = [
            ("fly-replay-src", &replay_src),
            ("fly-replay-failed", &failed),
        ];
        for (name, value) in extra {
            if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                req.headers_mut().insert(name, v);
            }
        }
        let resp = match send_to(inner, conn, &mut req, routed, request_id).await {
            Ok(r) => r,
            // Nothing reached the machine (it is stopping, or not listening yet): the
            // kept request goes to another machine, as Fly's proxy retries.
            Err(ForwardError::Connect(addr, cause) | ForwardError::Stale(addr, cause))
                if connect_failures < CONNECT_RETRIES =>
            {
                tracing::debug!(%addr, %cause, "retrying on another machine");
                connect_failures += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            // The machine went away mid-request (stopped between being chosen and
            // counted): an idempotent kept request is safe to send elsewhere.
            Err(ForwardError::Failed(addr, cause))
                if connect_failures < CONNECT_RETRIES
                    && template.method().is_idempotent()
                    && !serving(inner, &target) =>
            {
                tracing::debug!(%addr, %cause, "machine went away; retrying elsewhere");
                connect_failures += 1;
                continue;
            }
            Err(e) => return forward_error(&e),
        };
        replays += 1;
        // A fallback delivery may not replay again.
        if failed.is_some() || !asks_replay(&resp) {
            return resp;
        }
        let hop = match next_hop(inner, resp, &target, &want, &mut template).await {
            Ok(hop) => hop,
            Err(answer) => return answer,
        };
        replay_src = Some(hop.source);
        pending = hop.pending;
        want = hop.want;
    }
    text(
        StatusCode::BAD_GATEWAY,
        format!("the request was replayed more than {MAX_REPLAYS} times; giving up"),
    )
}

/// Where a replayed request goes next.
struct Hop {
    want: Want,
    /// Its `fly-replay-src`: the machine that replayed it, and the state it passes on.
    source: String,
    pending: Option<Pending>,
}

/// Follows the replay instructions in `resp`, the answer of the machine `target`:
/// `template` takes their transform, and the next hop says where it goes. The error is
/// the answer to give when the instructions cannot be followed.
async fn next_hop(
    inner: &Inner,
    resp: Response<Body>,
    target: &Target,
    want: &Want,
    template: &mut Request<()>,
) -> Result<Hop, Response<Body>> {
    let machine = target.instance.machine_id.clone();
    let instructions = match instructions(resp).await {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            return Err(text(
                StatusCode::BAD_GATEWAY,
                format!("machine {machine} answered with an invalid fly-replay: {e}"),
            ))
        }
        None => {
            return Err(text(
                StatusCode::BAD_GATEWAY,
                format!("machine {machine} answered with an unreadable fly-replay"),
            ))
        }
    };
    let app = instructions.app.clone().unwrap_or_else(|| want.app.clone());
    if !inner.instances.borrow().contains_key(&app) {
        return Err(text(
            StatusCode::BAD_GATEWAY,
            format!("fly-replay names app {app:?}, which has no machines"),
        ));
    }
    if let Err(e) = apply(template, &instructions.transform) {
        return Err(text(
            StatusCode::BAD_GATEWAY,
            format!("machine {machine} answered with an invalid fly-replay: {e}"),
        ));
    }
    let mut source = format!(
        "instance={machine};region={};t={}",
        target.instance.region,
        micros_now()
    );
    if let Some(state) = &instructions.state {
        source.push_str(&format!(";state={state}"));
    }
    let pending =
        (instructions.fallback.is_some() || instructions.timeout.is_some()).then(|| Pending {
            fallback: instructions.fallback,
            replayer: target.clone(),
            timeout: instructions.timeout,
            since: Instant::now(),
        });
    let mut want = Want {
        app,
        entry: want.entry,
        regions: instructions.regions.clone(),
        instance: instructions.instance.clone(),
        exclude: instructions.elsewhere.then(|| machine.clone()),
    };
    if let Some(preferred) = &instructions.prefer_instance {
        let available = route::machine_serves(inner, &want.app, preferred);
        if available {
            want.instance = Some(preferred.clone());
        }
    }
    Ok(Hop {
        want,
        source,
        pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fly_examples() {
        assert_eq!(
            parse("region=sjc").map(|r| r.regions),
            Ok(vec!["sjc".to_string()])
        );
        let r = parse(r#"region="sjc,any";app=target-app"#).expect("valid");
        assert_eq!(r.regions, vec!["sjc", "any"]);
        assert_eq!(r.app.as_deref(), Some("target-app"));
        let r = parse("instance=00bb33ff;state=abc").expect("valid");
        assert_eq!(r.instance.as_deref(), Some("00bb33ff"));
        assert_eq!(r.state.as_deref(), Some("abc"));
        assert!(parse("elsewhere=true").expect("valid").elsewhere);
        let r = parse("app=my-worker;timeout=10s;fallback=force_self").expect("valid");
        assert_eq!(r.timeout, Some(Duration::from_secs(10)));
        assert_eq!(r.fallback, Some(Fallback::ForceSelf));
        assert_eq!(
            parse("region=ord;timeout=800ms").expect("valid").timeout,
            Some(Duration::from_millis(800))
        );
        assert!(parse("nonsense").is_err());
        assert!(parse("colour=blue").is_err());
        assert!(parse("state=only").is_err());
        assert!(parse("region=ord;fallback=maybe").is_err());
    }

    #[test]
    fn parses_the_json_form() {
        let r = parse_json(
            br#"{"region": "sjc,any", "state": "s", "transform": {"path": "/x?y=1",
                "delete_headers": ["cookie"], "set_headers": [{"name": "x-a", "value": "b"}]}}"#,
        )
        .expect("valid");
        assert_eq!(r.regions, vec!["sjc", "any"]);
        assert_eq!(r.transform.path.as_deref(), Some("/x?y=1"));
        assert_eq!(r.transform.delete_headers, vec!["cookie"]);
        assert_eq!(r.transform.set_headers, vec![("x-a".into(), "b".into())]);
        assert!(parse_json(b"{}").is_err());
        assert!(parse_json(br#"{"region": "ord", "colour": 1}"#).is_err());
        assert!(parse_json(b"not json").is_err());
    }
}
