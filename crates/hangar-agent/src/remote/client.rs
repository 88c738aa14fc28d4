//! The control plane's side of the interface over HTTP: [`RemoteAgent`] answers every
//! [`AgentApi`] call by asking an agent at a URL. An agent that cannot be reached is
//! [`OpError::Unavailable`] (503 to the API's caller), never a hang: each call has a
//! deadline. `watch` keeps a long-poll going for as long as someone holds the receiver.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;

use hangar_runtime::logs::LogCursor;
use hangar_store::MachineRecord;
use hangar_types::{CheckStatus, MachineConfig, MachineState};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::{CreateBody, LogQuery, CONSOLE_SPEC_PARAM, PREFIX};
use crate::api::{AgentApi, Command, LogRead, OpError, Outcome, Snapshot};
use crate::tunnel::{self, PrivateTarget, Tunnel};
use crate::volumes::{VolumeError, VolumeOp, VolumeReply};
use hangar_runtime::console::ConsoleSpec;

/// Longest a call waits for an answer (an exec or a stop may take a while).
const CALL_DEADLINE: Duration = Duration::from_secs(330);
/// Longest a long-poll waits (the agent answers within 25 s).
const WAIT_DEADLINE: Duration = Duration::from_secs(35);

/// An agent reached over HTTP. Until it has registered, a call waits a moment for it,
/// then is unavailable.
#[derive(Clone)]
pub struct RemoteAgent {
    http: reqwest::Client,
    url: Arc<watch::Sender<Option<String>>>,
    token: Arc<str>,
}

/// How long a call waits for an agent to register (agents register every few seconds,
/// so one that runs is found after a restart of the control plane).
const REGISTRATION_WAIT: Duration = Duration::from_secs(10);

impl RemoteAgent {
    pub fn new(token: &str) -> RemoteAgent {
        RemoteAgent {
            http: reqwest::Client::new(),
            url: Arc::new(watch::channel(None).0),
            token: token.into(),
        }
    }

    /// Where the host's agent listens (as it registered).
    pub fn set_url(&self, url: &str) {
        self.url
            .send_replace(Some(url.trim_end_matches('/').to_string()));
    }

    pub fn url(&self) -> Option<String> {
        self.url.borrow().clone()
    }

    async fn endpoint(&self, path: &str) -> Result<String, OpError> {
        let mut rx = self.url.subscribe();
        let base = match tokio::time::timeout(REGISTRATION_WAIT, rx.wait_for(Option::is_some)).await {
            Ok(Ok(url)) => url.clone().unwrap_or_default(),
            _ => {
                return Err(OpError::Unavailable(
                    "no agent has registered with this control plane: start `hangar agent --control <this API's URL>` with the same HANGAR_AGENT_TOKEN".into(),
                ))
            }
        };
        Ok(format!("{base}{PREFIX}{path}"))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, OpError> {
        let resp = req
            .bearer_auth(&*self.token)
            .send()
            .await
            .map_err(|e| OpError::Unavailable(without_url(e)))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        match resp.json::<OpError>().await {
            Ok(e) => Err(e),
            Err(_) => Err(OpError::Internal(format!("the agent answered {status}"))),
        }
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, OpError> {
        self.send(req)
            .await?
            .json()
            .await
            .map_err(|e| OpError::Internal(format!("the agent's answer: {}", without_url(e))))
    }

    async fn post(&self, path: &str) -> Result<reqwest::RequestBuilder, OpError> {
        Ok(self
            .http
            .post(self.endpoint(path).await?)
            .timeout(CALL_DEADLINE))
    }

    async fn snapshot(&self, id: &str, after: Option<&str>) -> Result<Snapshot, OpError> {
        let mut req = self
            .http
            .get(self.endpoint(&format!("/machines/{id}/wait")).await?)
            .timeout(WAIT_DEADLINE);
        if let Some(a) = after {
            req = req.query(&[("after", a)]);
        }
        self.json(req).await
    }
}

impl RemoteAgent {
    /// Sends a request that asks to become a tunnel; the agent's error answer when it
    /// does not.
    async fn upgrade(&self, req: reqwest::RequestBuilder) -> Result<Tunnel, OpError> {
        let resp = req
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, tunnel::TUNNEL_PROTOCOL)
            .bearer_auth(&*self.token)
            .send()
            .await
            .map_err(|e| OpError::Unavailable(without_url(e)))?;
        let status = resp.status();
        if status != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            return Err(resp
                .json::<OpError>()
                .await
                .unwrap_or_else(|_| OpError::Internal(format!("the agent answered {status}"))));
        }
        let upgraded = resp
            .upgrade()
            .await
            .map_err(|e| OpError::Unavailable(without_url(e)))?;
        Ok(Box::new(upgraded))
    }
}

/// A transport error without the URL (which may carry nothing secret, but is noise).
fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

#[async_trait::async_trait]
impl AgentApi for RemoteAgent {
    async fn check_config(&self, config: &MachineConfig) -> Result<(), OpError> {
        let body = serde_json::json!({ "config": config });
        self.send(self.post("/check_config").await?.json(&body))
            .await?;
        Ok(())
    }

    async fn prepare(&self, config: &MachineConfig) -> Result<(), OpError> {
        let body = serde_json::json!({ "config": config });
        self.send(self.post("/prepare").await?.json(&body)).await?;
        Ok(())
    }

    async fn create(&self, machine: MachineRecord, skip_launch: bool) -> Result<(), OpError> {
        let body = CreateBody {
            machine,
            skip_launch,
        };
        self.send(self.post("/machines").await?.json(&body)).await?;
        Ok(())
    }

    async fn command(&self, machine_id: &str, command: Command) -> Result<Outcome, OpError> {
        let req = self
            .post(&format!("/machines/{machine_id}/command"))
            .await?
            .json(&command);
        self.json(req).await
    }

    async fn watch(&self, machine_id: &str) -> Option<watch::Receiver<Snapshot>> {
        let first = self.snapshot(machine_id, None).await.ok()?;
        if first.state == MachineState::Destroyed {
            return None;
        }
        let (tx, rx) = watch::channel(first);
        let (agent, id) = (self.clone(), machine_id.to_string());
        tokio::spawn(async move {
            loop {
                let seen = tx.borrow().event_id.clone();
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    next = agent.snapshot(&id, Some(&seen)) => next,
                };
                match next {
                    Ok(snap) => {
                        let destroyed = snap.state == MachineState::Destroyed;
                        tx.send_if_modified(|cur| {
                            let changed = *cur != snap;
                            *cur = snap;
                            changed
                        });
                        if destroyed {
                            return;
                        }
                    }
                    Err(OpError::NotFound) => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        });
        Some(rx)
    }

    async fn checks(&self, machine_ids: &[String]) -> HashMap<String, Vec<CheckStatus>> {
        let Ok(req) = self.post("/checks").await else {
            return HashMap::new();
        };
        self.json(req.json(machine_ids)).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "health check results unavailable from the agent");
            HashMap::new()
        })
    }

    async fn volume(&self, op: &VolumeOp) -> Result<VolumeReply, VolumeError> {
        let req = self
            .post("/volumes")
            .await
            .map_err(|e| VolumeError::Failed(e.to_string()))?
            .json(op);
        self.json::<Result<VolumeReply, VolumeError>>(req)
            .await
            .map_err(|e| VolumeError::Failed(e.to_string()))?
    }

    async fn resolve_private(&self, org: u16, host: &str) -> Result<Vec<Ipv6Addr>, OpError> {
        let url = self.endpoint("/private/resolve").await?;
        let req = self
            .http
            .get(url)
            .timeout(CALL_DEADLINE)
            .query(&[("org", org.to_string().as_str()), ("host", host)]);
        self.json(req).await
    }

    async fn console(&self, machine_id: &str, session: &ConsoleSpec) -> Result<Tunnel, OpError> {
        let url = self
            .endpoint(&format!("/machines/{machine_id}/console"))
            .await?;
        let spec = serde_json::to_string(session)
            .map_err(|e| OpError::Internal(format!("encode the console session: {e}")))?;
        self.upgrade(self.http.post(url).query(&[(CONSOLE_SPEC_PARAM, spec)]))
            .await
    }

    async fn wireguard(
        &self,
        peers: Vec<crate::api::GatewayPeer>,
    ) -> Result<crate::gateway::GatewayInfo, OpError> {
        let req = self.post("/wireguard").await?.json(&peers);
        self.json(req).await
    }

    async fn dial_private(&self, target: &PrivateTarget) -> Result<Tunnel, OpError> {
        let url = self.endpoint("/private/dial").await?;
        self.upgrade(self.http.get(url).query(target)).await
    }

    async fn logs(&self, machine_id: &str, after: Option<LogCursor>) -> Result<LogRead, OpError> {
        let url = self
            .endpoint(&format!("/machines/{machine_id}/logs"))
            .await?;
        let req = self
            .http
            .get(url)
            .timeout(CALL_DEADLINE)
            .query(&LogQuery::encode(after));
        self.json(req).await
    }
}
