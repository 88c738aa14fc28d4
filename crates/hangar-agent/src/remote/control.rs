//! The agent's calls to its control plane, over HTTP (`/v1/agent/…`, with the agent
//! token): registering where it listens (and again every few seconds, so a restarted
//! control plane finds it), sending its observed machine changes ([`ControlPlane`]),
//! fetching a machine's secrets at start ([`SecretSource`]), and keeping its proxy's
//! address map and hostname table from the control plane's edge, reloaded whenever the
//! control plane's change feed moves. While the control plane is away, each of these
//! waits and tries again; the machines and the proxy go on with what they have.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hangar_proxy::{AppAddresses, CertTable};
use hangar_runtime::Secrets;
use hangar_store::MachineRecord;
use hangar_types::observed::MachineChange;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::mirror::{ControlPlane, ObserveError};
use crate::{SecretSource, SecretsError};

/// How often the agent says where it listens.
const REGISTER_EVERY: Duration = Duration::from_secs(5);
/// How soon it tries again while the control plane has not taken its registration.
const REGISTER_RETRY: Duration = Duration::from_millis(500);

/// The control plane, as an agent reaches it.
#[derive(Clone)]
pub struct Control {
    http: reqwest::Client,
    base: Arc<str>,
    token: Arc<str>,
}

/// What the agent tells the control plane about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    /// Where the agent's interface listens.
    pub url: String,
    pub region: String,
    /// The host's size, for placement (absent from agents that predate it).
    #[serde(default)]
    pub capacity: Option<crate::host::HostCapacity>,
    /// The host's lasting id (`host::host_id`).
    #[serde(default)]
    pub host_id: Option<String>,
    /// This agent process, new at every start (its volumes were mounted afresh and
    /// wait for their keys).
    #[serde(default)]
    pub run: Option<String>,
}

/// The edge's tables as the control plane holds them, at a feed revision.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EdgeSnapshot {
    pub revision: i64,
    /// Dedicated addresses and the app each belongs to.
    pub addresses: Vec<(String, String)>,
    pub hosts: Vec<HostRoute>,
    /// ACME answers under way: TLS-ALPN-01 (hostname, certificate PEM, key PEM) and
    /// HTTP-01 (token, key authorization), at the board's version.
    #[serde(default)]
    pub tls_alpn_challenges: Vec<(String, String, String)>,
    #[serde(default)]
    pub http_challenges: Vec<(String, String)>,
    #[serde(default)]
    pub challenges_version: u64,
}

/// A hostname, its app, and the certificate to serve for it when there is one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostRoute {
    pub hostname: String,
    pub app: String,
    pub chain_pem: Option<String>,
    pub key_pem: Option<String>,
}

/// The agent's proxy's tables, kept from the control plane's edge, and whether they
/// have been loaded from it yet (a copy from the cache does not count).
pub struct ProxyTables {
    pub certs: Arc<CertTable>,
    pub addresses: watch::Sender<Arc<AppAddresses>>,
    pub loaded: watch::Sender<bool>,
}

/// Where the feed (and the board of ACME answers) is: asked with the caller's view,
/// answered once either moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedHead {
    pub head: i64,
    #[serde(default)]
    pub challenges: u64,
}

/// A wait on the feed: who asks, and what its proxy serves from now (which the control
/// plane takes as that proxy's acknowledgement).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedWait {
    /// The agent's registered address.
    pub agent: String,
    pub applied: FeedHead,
}

impl Control {
    pub fn new(base: &str, token: &str) -> Control {
        Control {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').into(),
            token: token.into(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/agent{path}", self.base)
    }

    async fn post<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<reqwest::Response, ObserveError> {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(&*self.token)
            .timeout(Duration::from_secs(30))
            .json(body)
            .send()
            .await
            .map_err(|e| ObserveError::Unavailable(e.without_url().to_string()))?;
        let status = resp.status();
        if status.is_success() {
            Ok(resp)
        } else if status.is_server_error() {
            Err(ObserveError::Unavailable(format!(
                "the control plane answered {status}"
            )))
        } else {
            let body = resp.text().await.unwrap_or_default();
            Err(ObserveError::Refused(format!("{status}: {body}")))
        }
    }

    /// Says where this agent listens, once its proxy holds the control plane's edge
    /// (`edge_loaded`: a machine created through the control plane waits for the
    /// registration, so by then its hostnames are served here), and again every few
    /// seconds until cancelled.
    pub async fn keep_registered(
        self,
        me: Registration,
        mut edge_loaded: watch::Receiver<bool>,
        cancel: CancellationToken,
    ) {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = edge_loaded.wait_for(|loaded| *loaded) => {}
        }
        let mut said = false;
        loop {
            match self.post("/register", &me).await {
                Ok(_) if !said => {
                    tracing::info!(control = %self.base, "registered with the control plane");
                    said = true;
                }
                Ok(_) => {}
                Err(e) => {
                    if said {
                        tracing::warn!(error = %e, "cannot reach the control plane; machines and the proxy go on");
                    }
                    said = false;
                }
            }
            // Until the control plane has heard it, ask again soon: calls there wait for it.
            let next = if said { REGISTER_EVERY } else { REGISTER_RETRY };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(next) => {}
            }
        }
    }

    /// Hands the bytes the proxy sent per app to the control plane every few seconds
    /// (metering is the control plane's); what cannot be handed over is kept for the
    /// next try.
    pub async fn report_egress(self, egress: Arc<hangar_proxy::Egress>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            let sent = egress.take();
            if sent.is_empty() {
                continue;
            }
            if self.post("/egress", &sent).await.is_err() {
                for (app, bytes) in sent {
                    egress.give_back(&app, bytes);
                }
            }
        }
    }

    async fn edge_snapshot(&self) -> Result<EdgeSnapshot, ObserveError> {
        self.post("/edge", &())
            .await?
            .json()
            .await
            .map_err(|e| ObserveError::Unavailable(e.without_url().to_string()))
    }

    async fn feed_head(&self, wait: &FeedWait) -> Result<FeedHead, ObserveError> {
        self.post("/feed", wait)
            .await?
            .json()
            .await
            .map_err(|e| ObserveError::Unavailable(e.without_url().to_string()))
    }

    /// Keeps `certs` and `addresses` as the control plane's edge has them: a snapshot
    /// at start and whenever the change feed moves (the control plane answers a wait on
    /// the feed as soon as it does). While the control plane is away they stay as they
    /// were.
    ///
    /// Each wait on the feed tells the control plane what the proxy serves from, so
    /// its edge writes can wait for this host too. Each snapshot is also kept in `cache` (readable by root only: it holds private
    /// keys), so an agent restarted while the control plane is away serves at once.
    pub async fn follow_edge(
        self,
        me: String,
        proxy: ProxyTables,
        cache: std::path::PathBuf,
        cancel: CancellationToken,
    ) {
        let ProxyTables {
            certs,
            addresses,
            loaded,
        } = proxy;
        let mut seen: Option<FeedHead> = None;
        let mut answers = Answered::default();
        if let Some(snap) = read_cache(&cache) {
            apply_edge(&certs, &addresses, &mut answers, snap);
        }
        loop {
            let moved = match &seen {
                None => Ok(true),
                Some(at) => {
                    let wait = FeedWait {
                        agent: me.clone(),
                        applied: at.clone(),
                    };
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = self.feed_head(&wait) => r.map(|h| h != *at),
                    }
                }
            };
            let applied = match moved {
                Ok(false) => Ok(()),
                Ok(true) => self.edge_snapshot().await.map(|snap| {
                    seen = Some(FeedHead {
                        head: snap.revision,
                        challenges: snap.challenges_version,
                    });
                    write_cache(&cache, &snap);
                    apply_edge(&certs, &addresses, &mut answers, snap);
                    loaded.send_replace(true);
                }),
                Err(e) => Err(e),
            };
            if applied.is_err() {
                // Until the first snapshot the agent has not joined: try again soon.
                let pause = if seen.is_some() {
                    Duration::from_secs(1)
                } else {
                    REGISTER_RETRY
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

fn read_cache(path: &std::path::Path) -> Option<EdgeSnapshot> {
    let text = std::fs::read(path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(snap) => Some(snap),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable copy of the edge");
            None
        }
    }
}

/// Replaces the copy of the edge atomically; a failure is logged, the proxy goes on.
fn write_cache(path: &std::path::Path, snap: &EdgeSnapshot) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let written = serde_json::to_vec(snap)
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        });
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep a copy of the edge");
    }
}

/// The ACME answers this agent's proxy gives now, to take back when they go.
#[derive(Default)]
struct Answered {
    tls_alpn: std::collections::BTreeSet<String>,
    http: std::collections::BTreeSet<String>,
}

/// Replaces the proxy's tables with a snapshot's.
fn apply_edge(
    certs: &CertTable,
    addresses: &watch::Sender<Arc<AppAddresses>>,
    answered: &mut Answered,
    snap: EdgeSnapshot,
) {
    let mut tls_alpn = std::collections::BTreeSet::new();
    for (hostname, cert, key) in &snap.tls_alpn_challenges {
        if let Ok(k) = hangar_proxy::challenge_key(cert, key) {
            certs.put_alpn_challenge(hostname, k);
        }
        tls_alpn.insert(hostname.clone());
    }
    for gone in answered.tls_alpn.difference(&tls_alpn) {
        certs.remove_alpn_challenge(gone);
    }
    let mut http = std::collections::BTreeSet::new();
    for (token, key_authorization) in &snap.http_challenges {
        certs.put_http_challenge(token, key_authorization);
        http.insert(token.clone());
    }
    for gone in answered.http.difference(&http) {
        certs.remove_http_challenge(gone);
    }
    *answered = Answered { tls_alpn, http };
    let map: AppAddresses = snap
        .addresses
        .into_iter()
        .filter_map(|(ip, app)| ip.parse().ok().map(|ip| (ip, app)))
        .collect();
    addresses.send_replace(Arc::new(map));
    let known: std::collections::BTreeSet<String> =
        snap.hosts.iter().map(|h| h.hostname.clone()).collect();
    certs.retain_hosts(|h| known.contains(h));
    for h in snap.hosts {
        let key = match (&h.chain_pem, &h.key_pem) {
            (Some(chain), Some(key)) => hangar_proxy::certified_key(chain, key).ok(),
            _ => None,
        };
        certs.put_host(&h.hostname, &h.app, key);
    }
}

#[async_trait::async_trait]
impl ControlPlane for Control {
    async fn observe(&self, changes: &[MachineChange]) -> Result<(), ObserveError> {
        self.post("/changes", changes).await.map(|_| ())
    }
}

#[async_trait::async_trait]
impl SecretSource for Control {
    async fn for_machine(&self, machine: &MachineRecord) -> Result<Secrets, SecretsError> {
        let resp = self.post("/secrets", machine).await.map_err(|e| match e {
            ObserveError::Unavailable(m) => SecretsError::Unavailable(m),
            ObserveError::Refused(m) => SecretsError::Failed(m),
        })?;
        let values: BTreeMap<String, String> = resp.json().await.map_err(|e| {
            SecretsError::Unavailable(format!("the control plane's answer: {}", e.without_url()))
        })?;
        Ok(Secrets(values))
    }
}
