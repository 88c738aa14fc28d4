//! ACME challenge answers while an issuance is under way: handed to this process's
//! proxy at once, and kept on a board that agents in processes of their own read with
//! the edge snapshot (the board's version moves with every change, and a wait on the
//! feed answers when it does), so whichever host's proxy the CA reaches can answer.
//! Answers are short-lived and never stored.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use hangar_certs::acme::Challenges;
use hangar_proxy::{challenge_key, CertTable};
use tokio::sync::watch;

/// The answers now wanted, and a version that moves with each change.
#[derive(Default)]
pub struct ChallengeBoard {
    answers: Mutex<Answers>,
    version: watch::Sender<u64>,
}

/// TLS-ALPN-01 certificates (PEM) by hostname, HTTP-01 key authorizations by token.
#[derive(Default, Clone)]
pub struct Answers {
    pub tls_alpn: BTreeMap<String, (String, String)>,
    pub http: BTreeMap<String, String>,
}

impl ChallengeBoard {
    fn change(&self, f: impl FnOnce(&mut Answers)) {
        f(&mut self.answers.lock().unwrap_or_else(|p| p.into_inner()));
        self.version.send_modify(|v| *v += 1);
    }

    /// The answers and the version they are at.
    pub fn read(&self) -> (u64, Answers) {
        let answers = self
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (*self.version.borrow(), answers)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// Where an issuance puts its answers: this process's proxy and the board.
pub(super) struct ProxyChallenges {
    pub certs: Arc<CertTable>,
    pub board: Arc<ChallengeBoard>,
    pub agents: Arc<super::AgentViews>,
}

impl Challenges for ProxyChallenges {
    fn published(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let version = *self.board.version.borrow();
        Box::pin(self.agents.reach_challenges(version))
    }
    fn put_tls_alpn(&self, hostname: &str, cert_pem: &str, key_pem: &str) {
        match challenge_key(cert_pem, key_pem) {
            Ok(key) => self.certs.put_alpn_challenge(hostname, key),
            Err(e) => tracing::warn!(%hostname, error = %e, "cannot serve the TLS-ALPN-01 answer"),
        }
        self.board.change(|a| {
            a.tls_alpn
                .insert(hostname.into(), (cert_pem.into(), key_pem.into()));
        });
    }
    fn remove_tls_alpn(&self, hostname: &str) {
        self.certs.remove_alpn_challenge(hostname);
        self.board.change(|a| {
            a.tls_alpn.remove(hostname);
        });
    }
    fn put_http(&self, token: &str, key_authorization: &str) {
        self.certs.put_http_challenge(token, key_authorization);
        self.board.change(|a| {
            a.http.insert(token.into(), key_authorization.into());
        });
    }
    fn remove_http(&self, token: &str) {
        self.certs.remove_http_challenge(token);
        self.board.change(|a| {
            a.http.remove(token);
        });
    }
}
