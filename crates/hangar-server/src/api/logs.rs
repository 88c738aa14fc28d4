//! `GET /v1/apps/{app}/logs`: an app's machine logs as NDJSON — the retained lines, and
//! with `follow=true` whatever the machines write next, until the client goes away.
//!
//! Query: `machine_id` (or `instance`), `region`, `follow`, `limit` (how many retained
//! lines to send first; default 100).

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use hangar_agent::api::OpError;
use hangar_runtime::logs::{LogCursor, LogLine};
use hangar_store::MachineFilter;
use hangar_types::LogEntry;
use tokio::sync::mpsc;

use super::apps::load_app;
use super::{ApiError, Params};
use crate::auth::Caller;
use crate::AppState;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;
/// How often a follower looks for new lines, and for new machines.
const POLL: Duration = Duration::from_millis(200);
const RESCAN_EVERY: u32 = 5;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/apps/{app}/logs", get(logs))
}

struct Source {
    machine: String,
    region: String,
    cursor: Option<LogCursor>,
}

#[derive(Clone)]
struct Query {
    app: String,
    machine: Option<String>,
    region: Option<String>,
}

/// The app's machines that match the query, as log sources.
async fn sources(state: &AppState, q: &Query) -> Result<Vec<Source>, ApiError> {
    let (app, filter) = (
        q.app.clone(),
        MachineFilter {
            region: q.region.clone(),
            ..Default::default()
        },
    );
    let machines = state
        .store
        .call(move |db| db.machine_listings(&app, &filter))
        .await?;
    Ok(machines
        .into_iter()
        .filter(|m| q.machine.as_deref().is_none_or(|id| id == m.id))
        .map(|m| Source {
            machine: m.id,
            region: m.region,
            cursor: None,
        })
        .collect())
}

fn entry(q: &Query, s: &Source, l: LogLine) -> LogEntry {
    LogEntry {
        timestamp: l.timestamp,
        app: q.app.clone(),
        machine: s.machine.clone(),
        region: s.region.clone(),
        stream: l.stream,
        message: l.message,
    }
}

fn ndjson(entries: &[LogEntry]) -> Bytes {
    let mut out = Vec::new();
    for e in entries {
        if serde_json::to_writer(&mut out, e).is_ok() {
            out.push(b'\n');
        }
    }
    Bytes::from(out)
}

/// Reads what every source has after its cursor (with none yet, its retained lines),
/// moving the cursors on; oldest first. A source whose host cannot give its log now
/// keeps its cursor (and is read again next time); the error is the first such.
async fn read_on(
    state: &AppState,
    sources: &mut [Source],
    q: &Query,
) -> (Vec<LogEntry>, Option<OpError>) {
    let mut all = Vec::new();
    let mut failed = None;
    for s in sources.iter_mut() {
        let read = match state.agent.api().logs(&s.machine, s.cursor).await {
            Ok(read) => read,
            Err(e) => {
                failed.get_or_insert(e);
                continue;
            }
        };
        if read.cursor.is_some() {
            s.cursor = read.cursor;
        }
        all.extend(read.lines.into_iter().map(|l| entry(q, s, l)));
    }
    all.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
    (all, failed)
}

async fn logs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let follow = params.flag("follow")?;
    let limit = match params.get("limit").filter(|v| !v.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ApiError::invalid(format!("limit must be a number of lines, got {v:?}")))?
            .min(MAX_LIMIT),
    };
    let q = Query {
        app: app.name.clone(),
        machine: params
            .get("machine_id")
            .or(params.get("instance"))
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        region: params
            .get("region")
            .filter(|v| !v.is_empty())
            .map(str::to_string),
    };
    let mut sources = sources(&state, &q).await?;
    let (mut retained, failed) = read_on(&state, &mut sources, &q).await;
    // With nothing to show and a host that could not say, the caller hears why.
    if let Some(e) = failed.filter(|_| retained.is_empty()) {
        return Err(e.into());
    }
    if let Some(m) = &q.machine {
        if sources.is_empty() {
            return Err(ApiError::not_found(format!(
                "machine {m} not found in app {}",
                q.app
            )));
        }
    }
    let skip = retained.len().saturating_sub(limit);
    retained.drain(..skip);
    let first = ndjson(&retained);
    let headers = [(header::CONTENT_TYPE, "application/x-ndjson")];
    if !follow {
        return Ok((headers, first).into_response());
    }

    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(follow_logs(state, q, sources, first, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// Sends new lines as they are written, picking up machines created meanwhile, until
/// the client disconnects.
async fn follow_logs(
    state: AppState,
    q: Query,
    mut sources: Vec<Source>,
    first: Bytes,
    tx: mpsc::Sender<Bytes>,
) {
    if tx.send(first).await.is_err() {
        return;
    }
    let mut tick = 0u32;
    loop {
        tokio::time::sleep(POLL).await;
        tick += 1;
        if tick.is_multiple_of(RESCAN_EVERY) {
            if let Ok(new) = sources_again(&state, &q, &sources).await {
                sources.extend(new);
            }
        }
        let (lines, failed) = read_on(&state, &mut sources, &q).await;
        if let Some(e) = failed {
            tracing::debug!(app = %q.app, error = %e, "a machine's log is unavailable; trying again");
        }
        let chunk = if lines.is_empty() {
            Bytes::new()
        } else {
            ndjson(&lines)
        };
        // An empty chunk still tells us when the client has gone away.
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
}

/// Machines that matched the query since the follower started.
async fn sources_again(
    state: &AppState,
    q: &Query,
    known: &[Source],
) -> Result<Vec<Source>, ApiError> {
    let seen: HashMap<&str, ()> = known.iter().map(|s| (s.machine.as_str(), ())).collect();
    Ok(sources(state, q)
        .await?
        .into_iter()
        .filter(|s| !seen.contains_key(s.machine.as_str()))
        .collect())
}
