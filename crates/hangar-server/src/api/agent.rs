//! `/v1/agent/…`: what an agent in a process of its own asks of the control plane, with
//! the shared agent token (`HANGAR_AGENT_TOKEN`) instead of a user's: register where it
//! listens, hand over the machine changes it observed, get a machine's secrets at
//! start, and keep its proxy's tables (a snapshot of the edge, and a wait on the change
//! feed that answers when it moves). Only a control plane started without an agent of
//! its own (`hangar server --remote-agent`) answers them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use hangar_agent::mirror::{ControlPlane, ObserveError};
use hangar_agent::remote::control::{EdgeSnapshot, FeedHead, FeedWait, HostRoute, Registration};
use hangar_store::{FeedRead, MachineRecord};
use hangar_types::observed::MachineChange;

use super::ApiError;
use crate::AppState;

/// How long a wait on the feed is held when nothing changes.
const FEED_WAIT: Duration = Duration::from_secs(20);

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/agent/register", post(register))
        .route("/v1/agent/changes", post(changes))
        .route("/v1/agent/secrets", post(secrets))
        .route("/v1/agent/edge", post(edge))
        .route("/v1/agent/feed", post(feed))
        .route("/v1/agent/egress", post(egress))
}

/// The remote agent link, once the caller has shown the agent token.
fn agent_link(
    s: &AppState,
    headers: &HeaderMap,
) -> Result<hangar_agent::remote::client::RemoteAgent, ApiError> {
    let (Some(link), Some(token)) = (&s.remote_agent, &s.agent_token) else {
        return Err(ApiError::not_found(
            "this control plane runs its own agent; start it with --remote-agent to take agents of their own",
        ));
    };
    let authorization = headers.get(axum::http::header::AUTHORIZATION);
    if !hangar_agent::remote::bearer_matches(authorization, token) {
        return Err(ApiError::unauthorized(
            "the agent token is missing or wrong: give the agent the control plane's HANGAR_AGENT_TOKEN",
        ));
    }
    Ok(link.clone())
}

async fn register(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(me): Json<Registration>,
) -> Result<StatusCode, ApiError> {
    let link = agent_link(&s, &headers)?;
    s.edge.agents().registered(me.url.trim_end_matches('/'));
    if let (Some(capacity), Some(id)) = (me.capacity, me.host_id.clone()) {
        s.placement.host_seen(crate::placement::Host {
            id: id.clone(),
            region: me.region.clone(),
            capacity,
        });
        if me
            .run
            .as_deref()
            .is_some_and(|run| s.placement.agent_run(&id, run))
        {
            // A host that (re)started has mounted its volumes without their keys.
            let state = s.clone();
            tokio::spawn(async move { crate::volumes::keys::unlock_host(&state, &id).await });
        }
    }
    if link.url().as_deref() != Some(me.url.trim_end_matches('/')) {
        tracing::info!(agent = %me.url, region = %me.region, "agent registered");
        link.set_url(&me.url);
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn changes(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(changes): Json<Vec<MachineChange>>,
) -> Result<StatusCode, ApiError> {
    agent_link(&s, &headers)?;
    match crate::observed::MachineCopy(s.store.clone())
        .observe(&changes)
        .await
    {
        Ok(()) => {
            meter(&s, &changes).await;
            Ok(StatusCode::NO_CONTENT)
        }
        Err(ObserveError::Unavailable(m)) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m).with_code("unavailable"))
        }
        Err(ObserveError::Refused(m)) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m)),
    }
}

/// Tells usage metering how each changed machine looks now (an embedded agent tells it
/// directly).
async fn meter(s: &AppState, changes: &[MachineChange]) {
    let ids: std::collections::BTreeSet<String> =
        changes.iter().map(|c| c.machine_id().to_string()).collect();
    for id in ids {
        if let Ok(Some(m)) = s.store.call(move |db| db.machine_by_id(&id)).await {
            hangar_agent::Observer::machine(s.meter.as_ref(), &m);
        }
    }
}

/// Bytes the agent's proxy sent per app since it last said.
async fn egress(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(sent): Json<Vec<(String, u64)>>,
) -> Result<StatusCode, ApiError> {
    agent_link(&s, &headers)?;
    for (app, bytes) in sent {
        s.meter.add_egress(&app, bytes);
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn secrets(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(machine): Json<MachineRecord>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    agent_link(&s, &headers)?;
    let secrets = s.vault.for_machine(&machine).await?;
    Ok(Json(secrets.0))
}

async fn edge(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<EdgeSnapshot>, ApiError> {
    agent_link(&s, &headers)?;
    let (challenges_version, answers) = s.edge.challenges().read();
    let snapshot = s
        .store
        .call(move |db| {
            // The revision first: whatever commits after it moves the feed past it.
            let revision = db.feed_head()?;
            let addresses = db
                .all_ips()?
                .into_iter()
                .filter(|r| !r.shared)
                .map(|r| (r.ip, r.app_name))
                .collect();
            let hosts = db
                .all_certificates()?
                .into_iter()
                .map(|c| {
                    let active = c.status == "active";
                    HostRoute {
                        hostname: c.hostname,
                        app: c.app_name,
                        chain_pem: c.chain_pem.filter(|_| active),
                        key_pem: c.key_pem.filter(|_| active),
                    }
                })
                .collect();
            Ok(EdgeSnapshot {
                revision,
                addresses,
                hosts,
                tls_alpn_challenges: answers
                    .tls_alpn
                    .into_iter()
                    .map(|(h, (cert, key))| (h, cert, key))
                    .collect(),
                http_challenges: answers.http.into_iter().collect(),
                challenges_version,
            })
        })
        .await?;
    Ok(Json(snapshot))
}

/// Takes what the agent's proxy serves from as its acknowledgement, then answers with
/// the feed's head (and the ACME board's version) as soon as either moved from that, or
/// after a while.
async fn feed(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(wait): Json<FeedWait>,
) -> Result<Json<FeedHead>, ApiError> {
    agent_link(&s, &headers)?;
    let after = wait.applied;
    s.edge.agents().applied(
        wait.agent.trim_end_matches('/'),
        after.head,
        after.challenges,
    );
    let mut board = s.edge.challenges().subscribe();
    let board_moved = |v: u64| v != after.challenges;
    let head = s.store.call(|db| db.feed_head()).await?;
    if head < after.head || board_moved(*board.borrow()) {
        // A younger feed (another database) or new answers: the agent reloads.
        let challenges = *board.borrow();
        return Ok(Json(FeedHead { head, challenges }));
    }
    let until = Instant::now() + FEED_WAIT;
    let mut follower = s.store.follow(after.head);
    while Instant::now() < until {
        tokio::select! {
            read = follower.next() => match read? {
                FeedRead::Entries(e) if e.is_empty() => continue,
                _ => break,
            },
            _ = board.wait_for(|v| board_moved(*v)) => break,
        }
    }
    let challenges = *board.borrow();
    Ok(Json(FeedHead {
        head: follower.cursor(),
        challenges,
    }))
}
