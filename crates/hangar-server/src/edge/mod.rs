//! The edge as the control plane keeps it: which addresses each app holds, the
//! certificates of its hostnames, and their issuance and renewal. Rows live in the
//! store; what the proxy needs (the address map, the hostname table with certificates)
//! follows the store's change feed (`feed.rs`), and challenge answers are handed to it
//! directly. Serving traffic is the proxy's job, not this module's.

mod agents;
mod certs;
mod challenges;
mod feed;
mod ips;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use hangar_certs::ca::DevCa;
use hangar_proxy::{AppAddresses, CertTable};
use hangar_store::Store;
use tokio::sync::watch;

pub use agents::AgentViews;
pub use certs::{CertView, ACME as ACME_AUTHORITY, CUSTOM as CUSTOM_AUTHORITY};
pub use challenges::{Answers as ChallengeAnswers, ChallengeBoard};
pub use hangar_certs::acme::{AcmeConfig, Method as AcmeMethod};
pub use ips::{IpKind, Pools};

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Store(#[from] hangar_store::StoreError),
    #[error("{0}")]
    Cert(#[from] hangar_certs::CertError),
}

/// How certificates for custom hostnames are obtained.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    pub config: AcmeConfig,
    /// The challenge tried first; HTTP-01 is the fallback when TLS-ALPN-01 fails.
    pub method: AcmeMethod,
}

pub struct Edge {
    store: Store,
    certs: Arc<CertTable>,
    addresses: watch::Sender<Arc<AppAddresses>>,
    pools: Pools,
    /// The edge listener's address, which every app shares.
    shared_v4: IpAddr,
    app_domain: String,
    dev_ca: DevCa,
    acme: AcmeSettings,
    /// Hostnames with an issuance under way.
    issuing: Mutex<std::collections::HashSet<String>>,
    /// The feed revision the proxy's tables reflect.
    applied: watch::Sender<i64>,
    /// ACME answers under way, for agents' proxies too.
    challenges: Arc<ChallengeBoard>,
    /// What agents' proxies in processes of their own serve from.
    agents: Arc<AgentViews>,
}

pub struct EdgeConfig {
    pub pools: Pools,
    pub shared_v4: IpAddr,
    pub app_domain: String,
    pub data_dir: std::path::PathBuf,
    pub acme: AcmeSettings,
}

impl Edge {
    pub fn new(store: Store, config: EdgeConfig) -> Result<Arc<Edge>, EdgeError> {
        let dev_ca = DevCa::load_or_create(&config.data_dir.join("certs"))?;
        Ok(Arc::new(Edge {
            store,
            certs: Arc::default(),
            addresses: watch::channel(Arc::default()).0,
            pools: config.pools,
            shared_v4: config.shared_v4,
            app_domain: config.app_domain,
            dev_ca,
            acme: config.acme,
            issuing: Mutex::default(),
            applied: watch::channel(0).0,
            challenges: Arc::default(),
            agents: Arc::default(),
        }))
    }

    pub fn cert_table(&self) -> Arc<CertTable> {
        self.certs.clone()
    }

    /// ACME answers under way.
    pub fn challenges(&self) -> &ChallengeBoard {
        &self.challenges
    }

    /// What agents' proxies serve from, as their waits on the feed say.
    pub fn agents(&self) -> &AgentViews {
        &self.agents
    }

    pub fn addresses(&self) -> watch::Receiver<Arc<AppAddresses>> {
        self.addresses.subscribe()
    }

    pub fn dev_ca_pem(&self) -> &str {
        self.dev_ca.cert_pem()
    }

    /// The hostname every app gets: `<app>.<app-domain>`.
    pub fn app_hostname(&self, app: &str) -> String {
        format!("{app}.{}", self.app_domain)
    }

    /// Gives `app` what every app has, exactly once however often it runs: the shared
    /// IPv4, one IPv6, and the certificate for `<app>.<app-domain>`.
    pub async fn provision(&self, app: &str, org_id: i64) -> Result<(), EdgeError> {
        let a = app.to_string();
        let held = self.store.call(move |db| db.ips_of_app(&a)).await?;
        if !held.iter().any(|r| r.kind == IpKind::SharedV4.as_str()) {
            self.allocate(app, org_id, IpKind::SharedV4, None, None, None)
                .await?;
        }
        if !held.iter().any(|r| r.kind == IpKind::V6.as_str()) {
            self.allocate(app, org_id, IpKind::V6, None, None, None)
                .await?;
        }
        self.ensure_app_certificate(app).await
    }

    /// On start: publish every address and certificate, renew the apps' own
    /// certificates where due, and resume issuances that were under way. (An app whose
    /// create stopped half-way is finished by retrying the create, which provisions.)
    pub async fn take_charge(self: &Arc<Self>) -> Result<(), EdgeError> {
        self.load_and_follow().await?;
        let apps = self
            .store
            .call(|db| {
                let mut out = Vec::new();
                for org in db.orgs()? {
                    out.extend(db.apps_in_org(&org.slug)?.into_iter().map(|a| a.name));
                }
                Ok(out)
            })
            .await?;
        for app in apps {
            if let Err(e) = self.ensure_app_certificate(&app).await {
                tracing::warn!(%app, error = %e, "could not renew the app's certificate");
            }
        }
        Ok(())
    }

    /// Waits until the proxy has forgotten a deleted app (its rows went with it).
    pub async fn forget_app(&self) -> Result<(), EdgeError> {
        self.caught_up().await
    }
}
