//! ACME issuance (RFC 8555) for custom hostnames: one account per directory, kept in the
//! data dir; per hostname an order whose authorization is answered by TLS-ALPN-01 when
//! the CA offers it and the caller asks for it, else HTTP-01 — the proxy serves the
//! answers through [`Challenges`]. Returns the chain and key; storing them is the
//! caller's job.

use std::path::{Path, PathBuf};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationHandle, AuthorizationState, AuthorizationStatus,
    ChallengeType, Identifier, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, CustomExtension, KeyPair};

use crate::{CertError, Issued};

/// Where the proxy publishes challenge answers while an order is validated.
pub trait Challenges: Send + Sync {
    /// Serve this certificate to `acme-tls/1` handshakes for `hostname`.
    fn put_tls_alpn(&self, hostname: &str, cert_pem: &str, key_pem: &str);
    fn remove_tls_alpn(&self, hostname: &str);
    /// Answer `/.well-known/acme-challenge/<token>` with `key_authorization`.
    fn put_http(&self, token: &str, key_authorization: &str);
    fn remove_http(&self, token: &str);
    /// Waits until the answers put so far are served wherever the CA may connect
    /// (every proxy in front of the hostname); by default, at once.
    fn published(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

/// Which challenge to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    TlsAlpn01,
    Http01,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::TlsAlpn01 => "tls-alpn-01",
            Method::Http01 => "http-01",
        }
    }
}

/// An ACME CA to issue from.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    pub directory: String,
    /// A PEM root to trust for the directory's HTTPS (a test CA such as Pebble's).
    pub root: Option<PathBuf>,
    pub contact: Option<String>,
    /// Where the account's credentials are kept.
    pub state_dir: PathBuf,
}

fn acme(e: impl std::fmt::Display) -> CertError {
    CertError::Acme(e.to_string())
}

fn account_file(config: &AcmeConfig) -> PathBuf {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in config.directory.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    config.state_dir.join(format!("account-{h:016x}.json"))
}

fn builder(config: &AcmeConfig) -> Result<instant_acme::AccountBuilder, CertError> {
    match &config.root {
        Some(root) => Account::builder_with_root(root).map_err(acme),
        None => Account::builder().map_err(acme),
    }
}

async fn create_account(config: &AcmeConfig, path: &Path) -> Result<Account, CertError> {
    let contact: Vec<String> = config
        .contact
        .iter()
        .map(|c| format!("mailto:{c}"))
        .collect();
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder(config)?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            config.directory.clone(),
            None,
        )
        .await
        .map_err(acme)?;
    let json = serde_json::to_string(&credentials).map_err(acme)?;
    std::fs::create_dir_all(&config.state_dir).map_err(|error| CertError::Io {
        path: config.state_dir.clone(),
        error,
    })?;
    write_private(path, &json)?;
    Ok(account)
}

fn write_private(path: &Path, contents: &str) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |error| CertError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)
}

async fn account(config: &AcmeConfig, fresh: bool) -> Result<Account, CertError> {
    let path = account_file(config);
    if !fresh {
        if let Ok(json) = std::fs::read_to_string(&path) {
            if let Ok(credentials) = serde_json::from_str::<AccountCredentials>(&json) {
                return builder(config)?
                    .from_credentials(credentials)
                    .await
                    .map_err(acme);
            }
        }
    }
    create_account(config, &path).await
}

/// A certificate for answering TLS-ALPN-01 (RFC 8737): self-signed, for the hostname,
/// carrying the key authorization's digest in the critical acmeIdentifier extension.
fn alpn_certificate(hostname: &str, digest: &[u8]) -> Result<(String, String), CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![hostname.to_string()])?;
    params
        .custom_extensions
        .push(CustomExtension::new_acme_identifier(digest));
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// What to take down once the order is settled.
enum Answer {
    Alpn(String),
    Http(String),
}

/// Issues a certificate for `hostname`, answering with `method` when the CA offers it.
pub async fn issue(
    config: &AcmeConfig,
    hostname: &str,
    method: Method,
    challenges: &dyn Challenges,
) -> Result<Issued, CertError> {
    let mut order = new_order(config, hostname).await?;
    let mut answering = Answering {
        hostname,
        method,
        challenges,
        up: Vec::new(),
    };
    let result = async {
        answering.authorize(&mut order).await?;
        certificate(&mut order).await
    }
    .await;
    answering.take_down();
    result
}

/// An order for `hostname` from the account kept for the directory.
async fn new_order(config: &AcmeConfig, hostname: &str) -> Result<Order, CertError> {
    let identifiers = [Identifier::Dns(hostname.to_string())];
    match account(config, false)
        .await?
        .new_order(&NewOrder::new(&identifiers))
        .await
    {
        Ok(o) => Ok(o),
        // The CA may have forgotten the account (a test CA restarted): make a new one.
        Err(_) => account(config, true)
            .await?
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(acme),
    }
}

/// Answering an order's authorizations: how to answer, and the answers up so far.
struct Answering<'a> {
    hostname: &'a str,
    method: Method,
    challenges: &'a dyn Challenges,
    up: Vec<Answer>,
}

impl Answering<'_> {
    /// Answers every pending authorization of the order, telling the CA each is ready.
    async fn authorize(&mut self, order: &mut Order) -> Result<(), CertError> {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let authz = authz.map_err(acme)?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => return Err(CertError::Acme(format!("authorization is {other:?}"))),
            }
            self.answer(authz).await?;
        }
        Ok(())
    }

    /// Puts up the answer to the authorization's chosen challenge, then says it is ready.
    async fn answer(&mut self, mut authz: AuthorizationHandle<'_>) -> Result<(), CertError> {
        let kind = self.choose(&authz)?;
        let mut challenge = authz
            .challenge(kind.clone())
            .ok_or_else(|| CertError::Acme("challenge vanished".into()))?;
        let key_authorization = challenge.key_authorization();
        if kind == ChallengeType::TlsAlpn01 {
            let (cert, key) = alpn_certificate(self.hostname, key_authorization.digest().as_ref())?;
            self.challenges.put_tls_alpn(self.hostname, &cert, &key);
            self.up.push(Answer::Alpn(self.hostname.to_string()));
        } else {
            let token = challenge.token.clone();
            self.challenges.put_http(&token, key_authorization.as_str());
            self.up.push(Answer::Http(token));
        }
        self.challenges.published().await;
        challenge.set_ready().await.map_err(acme)
    }

    /// The challenge to answer: TLS-ALPN-01 when asked for and offered, else HTTP-01.
    fn choose(&self, authz: &AuthorizationState) -> Result<ChallengeType, CertError> {
        let offered = |t: ChallengeType| authz.challenges.iter().any(|c| c.r#type == t);
        if self.method == Method::TlsAlpn01 && offered(ChallengeType::TlsAlpn01) {
            Ok(ChallengeType::TlsAlpn01)
        } else if offered(ChallengeType::Http01) {
            Ok(ChallengeType::Http01)
        } else {
            Err(CertError::Acme(
                "the CA offers neither a TLS-ALPN-01 nor an HTTP-01 challenge".into(),
            ))
        }
    }

    fn take_down(self) {
        for answer in self.up {
            match answer {
                Answer::Alpn(h) => self.challenges.remove_tls_alpn(&h),
                Answer::Http(t) => self.challenges.remove_http(&t),
            }
        }
    }
}

/// Waits for the CA to validate the order, then finalizes it and fetches the chain.
async fn certificate(order: &mut Order) -> Result<Issued, CertError> {
    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(Duration::from_secs(90));
    let status = order.poll_ready(&retry).await.map_err(acme)?;
    if status != OrderStatus::Ready {
        return Err(validation_failed(order, status).await);
    }
    let key_pem = order.finalize().await.map_err(acme)?;
    let chain_pem = order.poll_certificate(&retry).await.map_err(acme)?;
    let (issuer, not_after) = crate::inspect(&chain_pem)?;
    Ok(Issued {
        chain_pem,
        key_pem,
        issuer,
        not_after,
    })
}

/// Why the order did not become ready: its status and the challenges' errors.
async fn validation_failed(order: &mut Order, status: OrderStatus) -> CertError {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(a)) = authorizations.next().await {
        for c in &a.challenges {
            if let Some(e) = &c.error {
                reasons.push(e.detail.clone().unwrap_or_else(|| format!("{e:?}")));
            }
        }
    }
    let reasons = if reasons.is_empty() {
        String::new()
    } else {
        format!(": {}", reasons.join("; "))
    };
    CertError::Acme(format!("validation failed (order is {status:?}){reasons}"))
}
