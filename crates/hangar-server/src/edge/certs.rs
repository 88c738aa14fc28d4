//! Certificates of app hostnames: the development CA's for `<app>.<app-domain>`, ACME's
//! for custom hostnames (issued in the background, TLS-ALPN-01 first and HTTP-01 as the
//! fallback, retried with backoff while validation fails), renewal ahead of expiry, and
//! publishing each to the proxy's hostname table as it becomes active.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hangar_certs::acme::{self, Method};
use hangar_certs::Issued;
use hangar_proxy::certified_key;
use hangar_store::CertRecord;
use tokio_util::sync::CancellationToken;

use super::{Edge, EdgeError};
use crate::clock;

pub const DEV_CA: &str = "dev_ca";
pub const ACME: &str = "acme";
pub const CUSTOM: &str = "custom";

/// A certificate as the API shows it.
#[derive(Debug, Clone)]
pub struct CertView {
    pub record: CertRecord,
    /// An issuance is running now.
    pub issuing: bool,
}

/// Publishes challenge answers to the proxy.
fn expires(record: &CertRecord) -> Option<SystemTime> {
    record
        .chain_pem
        .as_deref()
        .and_then(|pem| hangar_certs::inspect(pem).ok())
        .map(|(_, not_after)| not_after)
}

fn needs_issue(record: &CertRecord) -> bool {
    record.status != "active"
        || expires(record).is_none_or(|t| hangar_certs::due_for_renewal(t, SystemTime::now()))
}

/// A hostname's row before its first certificate.
fn pending(hostname: &str, app: &str, authority: &str) -> CertRecord {
    let now = clock::rfc3339_now();
    CertRecord {
        hostname: hostname.to_string(),
        app_name: app.to_string(),
        authority: authority.to_string(),
        status: "pending_validation".into(),
        chain_pem: None,
        key_pem: None,
        issuer: None,
        expires_at: None,
        last_error: None,
        created_at: now.clone(),
        updated_at: now,
    }
}

/// Waits before retry `attempt` of a failed validation: 1 min, 5 min, 15 min, then hourly.
fn backoff(attempt: u32) -> Duration {
    match attempt {
        0 => Duration::from_secs(60),
        1 => Duration::from_secs(300),
        2 => Duration::from_secs(900),
        _ => Duration::from_secs(3600),
    }
}

impl Edge {
    pub(super) fn publish(&self, record: &CertRecord) {
        let key = match (&record.chain_pem, &record.key_pem) {
            (Some(chain), Some(key)) if record.status == "active" => {
                match certified_key(chain, key) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        tracing::warn!(hostname = %record.hostname, error = %e, "stored certificate cannot be served");
                        None
                    }
                }
            }
            _ => None,
        };
        self.certs.put_host(&record.hostname, &record.app_name, key);
    }

    async fn store_issued(&self, hostname: &str, issued: Issued) -> Result<CertRecord, EdgeError> {
        let h = hostname.to_string();
        let record = self
            .store
            .call(move |db| {
                let Some(mut r) = db.certificate(&h)? else {
                    return Ok(None);
                };
                r.status = "active".into();
                r.chain_pem = Some(issued.chain_pem);
                r.key_pem = Some(issued.key_pem);
                r.issuer = Some(issued.issuer);
                r.expires_at = Some(clock::rfc3339(issued.not_after));
                r.last_error = None;
                r.updated_at = clock::rfc3339_now();
                db.update_certificate(&r)?;
                Ok(Some(r))
            })
            .await?;
        let record = record.ok_or_else(|| {
            EdgeError::Conflict(format!(
                "certificate for {hostname} was removed while it was issued"
            ))
        })?;
        self.caught_up().await?;
        Ok(record)
    }

    /// Makes sure `<app>.<app-domain>` has a current certificate from the development CA.
    pub(super) async fn ensure_app_certificate(&self, app: &str) -> Result<(), EdgeError> {
        let hostname = self.app_hostname(app);
        let h = hostname.clone();
        let existing = self.store.call(move |db| db.certificate(&h)).await?;
        if let Some(r) = &existing {
            if r.app_name != app {
                return Err(EdgeError::Conflict(format!(
                    "{hostname} belongs to app {}",
                    r.app_name
                )));
            }
            if !needs_issue(r) {
                self.publish(r);
                return Ok(());
            }
        }
        let row = pending(&hostname, app, DEV_CA);
        self.store
            .call(move |db| db.insert_certificate(&row))
            .await?;
        let issued = self.dev_ca.issue(&hostname)?;
        self.store_issued(&hostname, issued).await?;
        Ok(())
    }

    /// Publishes stored certificates and resumes pending issuances.
    pub(super) async fn load_certificates(self: &Arc<Self>) -> Result<(), EdgeError> {
        let all = self.store.call(|db| db.all_certificates()).await?;
        for r in all {
            self.publish(&r);
            if r.authority == ACME && needs_issue(&r) {
                self.spawn_issue(r.hostname.clone());
            }
        }
        Ok(())
    }

    /// Adds a custom hostname to `app` and starts issuing its certificate.
    pub async fn add_hostname(
        self: &Arc<Self>,
        app: &str,
        hostname: &str,
    ) -> Result<CertView, EdgeError> {
        let hostname = hostname.trim().trim_end_matches('.').to_ascii_lowercase();
        hangar_certs::validate_hostname(&hostname)?;
        if hostname.starts_with("*.") {
            return Err(EdgeError::Invalid(format!(
                "{hostname} is a wildcard: wildcard certificates need DNS-01 validation, which this platform does not perform; add each hostname instead"
            )));
        }
        let record = self.claim(pending(&hostname, app, ACME)).await?;
        self.caught_up().await?;
        if needs_issue(&record) {
            self.spawn_issue(hostname.clone());
        }
        Ok(self.view(record))
    }

    /// Records the hostname for its app unless it is already there, and returns the
    /// stored row; a hostname of another app is a conflict.
    async fn claim(&self, row: CertRecord) -> Result<CertRecord, EdgeError> {
        let (r, h) = (row.clone(), row.hostname.clone());
        let stored = self
            .store
            .call(move |db| {
                db.insert_certificate(&r)?;
                db.certificate(&h)
            })
            .await?
            .unwrap_or_else(|| row.clone());
        if stored.app_name != row.app_name {
            return Err(EdgeError::Conflict(format!(
                "{} is already a hostname of another app; remove it there first",
                row.hostname
            )));
        }
        Ok(stored)
    }

    /// Adds (or replaces) a hostname's certificate with one the user brings: it must be
    /// current, name the hostname, and match its key. It is served as is and never
    /// renewed here.
    pub async fn import(
        &self,
        app: &str,
        hostname: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<CertView, EdgeError> {
        let hostname = hostname.trim().trim_end_matches('.').to_ascii_lowercase();
        hangar_certs::validate_hostname(&hostname)?;
        let (issuer, not_after) = hangar_certs::check_covers(chain_pem, &hostname)?;
        certified_key(chain_pem, key_pem).map_err(EdgeError::Invalid)?;
        let mut row = self.claim(pending(&hostname, app, CUSTOM)).await?;
        row.authority = CUSTOM.into();
        row.status = "active".into();
        row.chain_pem = Some(chain_pem.to_string());
        row.key_pem = Some(key_pem.to_string());
        row.issuer = Some(issuer);
        row.expires_at = Some(clock::rfc3339(not_after));
        row.last_error = None;
        row.updated_at = clock::rfc3339_now();
        let r = row.clone();
        self.store
            .call(move |db| db.replace_certificate(&r))
            .await?;
        self.caught_up().await?;
        Ok(self.view(row))
    }

    fn view(&self, record: CertRecord) -> CertView {
        let issuing = self
            .issuing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&record.hostname);
        CertView { record, issuing }
    }

    pub async fn certificate(
        &self,
        app: &str,
        hostname: &str,
    ) -> Result<Option<CertView>, EdgeError> {
        let h = hostname.trim_end_matches('.').to_ascii_lowercase();
        let r = self.store.call(move |db| db.certificate(&h)).await?;
        Ok(r.filter(|r| r.app_name == app).map(|r| self.view(r)))
    }

    pub async fn certificates(&self, app: &str) -> Result<Vec<CertView>, EdgeError> {
        let a = app.to_string();
        let rows = self
            .store
            .call(move |db| db.certificates_of_app(&a))
            .await?;
        Ok(rows.into_iter().map(|r| self.view(r)).collect())
    }

    /// Runs validation again now for a certificate that is not active.
    pub async fn check(
        self: &Arc<Self>,
        app: &str,
        hostname: &str,
    ) -> Result<Option<CertView>, EdgeError> {
        let Some(view) = self.certificate(app, hostname).await? else {
            return Ok(None);
        };
        if view.record.authority == ACME && needs_issue(&view.record) {
            self.spawn_issue(view.record.hostname.clone());
        } else if view.record.authority == DEV_CA && needs_issue(&view.record) {
            self.ensure_app_certificate(app).await?;
        }
        self.certificate(app, hostname).await
    }

    pub async fn remove_hostname(&self, app: &str, hostname: &str) -> Result<bool, EdgeError> {
        let h = hostname.trim_end_matches('.').to_ascii_lowercase();
        if h == self.app_hostname(app) {
            return Err(EdgeError::Invalid(format!(
                "{h} is the app's own hostname; it goes when the app is destroyed"
            )));
        }
        let (a, hh) = (app.to_string(), h.clone());
        let removed = self
            .store
            .call(move |db| db.delete_certificate(&a, &hh))
            .await?;
        if removed {
            self.caught_up().await?;
        }
        Ok(removed)
    }

    /// Issues the hostname's certificate in the background, retrying failed validations
    /// with backoff until it is active or the hostname is removed.
    fn spawn_issue(self: &Arc<Self>, hostname: String) {
        {
            let mut issuing = self.issuing.lock().unwrap_or_else(|p| p.into_inner());
            if !issuing.insert(hostname.clone()) {
                return;
            }
        }
        let edge = self.clone();
        tokio::spawn(async move {
            let mut attempt = 0;
            loop {
                match edge.issue_once(&hostname).await {
                    Ok(true) => break,
                    Ok(false) => {
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                    }
                    Err(e) => {
                        tracing::warn!(%hostname, error = %e, "certificate issuance stopped");
                        break;
                    }
                }
            }
            let mut issuing = edge.issuing.lock().unwrap_or_else(|p| p.into_inner());
            issuing.remove(&hostname);
        });
    }

    /// One issuance attempt: `Ok(true)` when done (issued, or the hostname is gone),
    /// `Ok(false)` when validation failed and was recorded.
    async fn issue_once(&self, hostname: &str) -> Result<bool, EdgeError> {
        let h = hostname.to_string();
        if self
            .store
            .call(move |db| db.certificate(&h))
            .await?
            .is_none()
        {
            return Ok(true);
        }
        let challenges = super::challenges::ProxyChallenges {
            certs: self.certs.clone(),
            board: self.challenges.clone(),
            agents: self.agents.clone(),
        };
        let mut result =
            acme::issue(&self.acme.config, hostname, self.acme.method, &challenges).await;
        if let (Err(e), Method::TlsAlpn01) = (&result, self.acme.method) {
            tracing::info!(%hostname, error = %e, "TLS-ALPN-01 failed; trying HTTP-01");
            result = acme::issue(&self.acme.config, hostname, Method::Http01, &challenges).await;
        }
        match result {
            Ok(issued) => {
                tracing::info!(%hostname, issuer = %issued.issuer, "certificate issued");
                self.store_issued(hostname, issued).await?;
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(%hostname, error = %e, "certificate validation failed");
                let h = hostname.to_string();
                let message = e.to_string();
                self.store
                    .call(move |db| {
                        if let Some(mut r) = db.certificate(&h)? {
                            r.last_error = Some(message);
                            r.updated_at = clock::rfc3339_now();
                            db.update_certificate(&r)?;
                        }
                        Ok(())
                    })
                    .await?;
                Ok(false)
            }
        }
    }

    /// Renews certificates in the last third of their life, every `interval`.
    pub async fn renew_loop(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let all = match self.store.call(|db| db.all_certificates()).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read certificates for renewal");
                    continue;
                }
            };
            for r in all.into_iter().filter(needs_issue) {
                if r.authority == CUSTOM {
                    tracing::warn!(hostname = %r.hostname, expires_at = ?r.expires_at, "an imported certificate is near its expiry; import a new one");
                    continue;
                }
                tracing::info!(hostname = %r.hostname, "renewing certificate");
                if r.authority == DEV_CA {
                    if let Err(e) = self.ensure_app_certificate(&r.app_name).await {
                        tracing::warn!(hostname = %r.hostname, error = %e, "renewal failed");
                    }
                } else {
                    self.spawn_issue(r.hostname.clone());
                }
            }
        }
    }
}
