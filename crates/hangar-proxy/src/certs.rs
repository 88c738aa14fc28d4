//! The hostname table: which app each custom hostname belongs to and the certificate
//! served for it, plus the answers to ACME challenges in progress (TLS-ALPN-01
//! certificates and HTTP-01 key authorizations). The server fills it; the listeners read
//! it for SNI, `Host` routing and challenge answers. Issuing certificates is not here.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

#[derive(Default)]
pub struct CertTable {
    hosts: RwLock<HashMap<String, HostEntry>>,
    alpn_challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    http_challenges: RwLock<HashMap<String, String>>,
}

#[derive(Clone)]
struct HostEntry {
    app: String,
    key: Option<Arc<CertifiedKey>>,
}

/// A certificate chain and key in PEM, ready to serve.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate chain is not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("certificate chain holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("private key is not valid PEM: {e}"))?;
    let provider = provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|e| format!("certificate and key do not go together: {e}"))
}

/// Like [`certified_key`] but without checking the certificate against the key: for
/// TLS-ALPN-01 answers, whose critical acmeIdentifier extension the check rejects.
pub fn challenge_key(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate is not valid PEM: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("private key is not valid PEM: {e}"))?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unusable private key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

pub(crate) fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

fn lower(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl CertTable {
    /// Routes `hostname` to `app`, serving `key` for it over TLS when there is one.
    pub fn put_host(&self, hostname: &str, app: &str, key: Option<Arc<CertifiedKey>>) {
        let mut hosts = self.hosts.write().unwrap_or_else(|p| p.into_inner());
        hosts.insert(
            lower(hostname),
            HostEntry {
                app: app.to_string(),
                key,
            },
        );
    }

    pub fn remove_host(&self, hostname: &str) {
        let mut hosts = self.hosts.write().unwrap_or_else(|p| p.into_inner());
        hosts.remove(&lower(hostname));
    }

    /// Keeps only the hostnames `keep` says yes to (a reload from a snapshot).
    pub fn retain_hosts(&self, keep: impl Fn(&str) -> bool) {
        let mut hosts = self.hosts.write().unwrap_or_else(|p| p.into_inner());
        hosts.retain(|h, _| keep(h));
    }

    /// Forgets every hostname of `app`.
    pub fn remove_app(&self, app: &str) {
        let mut hosts = self.hosts.write().unwrap_or_else(|p| p.into_inner());
        hosts.retain(|_, e| e.app != app);
    }

    /// The app `hostname` belongs to: exact first, then a wildcard one label up.
    pub fn app_of(&self, hostname: &str) -> Option<String> {
        self.entry(hostname).map(|e| e.app)
    }

    fn entry(&self, hostname: &str) -> Option<HostEntry> {
        let host = lower(hostname);
        let hosts = self.hosts.read().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = hosts.get(&host) {
            return Some(e.clone());
        }
        let (_, parent) = host.split_once('.')?;
        hosts.get(&format!("*.{parent}")).cloned()
    }

    /// The certificate served for `hostname`.
    pub fn key_of(&self, hostname: &str) -> Option<Arc<CertifiedKey>> {
        self.entry(hostname).and_then(|e| e.key)
    }

    pub fn put_alpn_challenge(&self, hostname: &str, key: Arc<CertifiedKey>) {
        let mut map = self
            .alpn_challenges
            .write()
            .unwrap_or_else(|p| p.into_inner());
        map.insert(lower(hostname), key);
    }

    pub fn remove_alpn_challenge(&self, hostname: &str) {
        let mut map = self
            .alpn_challenges
            .write()
            .unwrap_or_else(|p| p.into_inner());
        map.remove(&lower(hostname));
    }

    pub fn put_http_challenge(&self, token: &str, key_authorization: &str) {
        let mut map = self
            .http_challenges
            .write()
            .unwrap_or_else(|p| p.into_inner());
        map.insert(token.to_string(), key_authorization.to_string());
    }

    pub fn remove_http_challenge(&self, token: &str) {
        let mut map = self
            .http_challenges
            .write()
            .unwrap_or_else(|p| p.into_inner());
        map.remove(token);
    }

    /// The key authorization to answer `/.well-known/acme-challenge/<token>` with.
    pub fn http_challenge(&self, token: &str) -> Option<String> {
        let map = self
            .http_challenges
            .read()
            .unwrap_or_else(|p| p.into_inner());
        map.get(token).cloned()
    }

    fn alpn_challenge(&self, hostname: &str) -> Option<Arc<CertifiedKey>> {
        let map = self
            .alpn_challenges
            .read()
            .unwrap_or_else(|p| p.into_inner());
        map.get(&lower(hostname)).cloned()
    }
}

/// Picks the certificate for a TLS handshake by SNI; `fallback` names the hostname whose
/// certificate is served when the client sends none (a connection to an app's own
/// address).
#[derive(Clone)]
pub(crate) struct Resolver {
    pub table: Arc<CertTable>,
    pub fallback: Option<String>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_string);
        let acme = hello
            .alpn()
            .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN));
        if acme {
            return sni.and_then(|h| self.table.alpn_challenge(&h));
        }
        match sni {
            Some(h) => self.table.key_of(&h),
            None => self.fallback.as_deref().and_then(|h| self.table.key_of(h)),
        }
    }
}
