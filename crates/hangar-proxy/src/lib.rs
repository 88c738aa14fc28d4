//! The edge proxy: Fly's proxy for one host. HTTP and HTTPS listeners route requests for
//! `<app>.<app-domain>`, and for hostnames an app holds certificates for, to the app's
//! machines; apps' own addresses get listeners for every port their services declare.
//! Machines are chosen by `route` and started for traffic through `wake`; requests
//! are sent on by `forward`, their machines' answers counted as egress (`egress`);
//! `fly-replay` is carried out by `http`; autostop decisions are in [`autostop`].
//!
//! The proxy reads only what the server publishes: the live [`InstanceSet`] on a watch
//! channel, the app addresses, and the hostname table ([`CertTable`]). It never queries
//! the store and never issues certificates; it starts machines through [`Starter`].

pub mod autostop;
mod certs;
mod egress;
mod forward;
mod http;
mod instance;
mod listen;
mod load;
mod pool;
mod ports;
mod proxy_proto;
mod replay;
mod route;
mod wake;

pub use certs::{certified_key, challenge_key, CertTable};
pub use egress::Egress;
pub use instance::{
    AutostopMode, Entry, Handler, Health, Instance, InstanceSet, Port, PrivateName, Service,
};
pub use load::Load;
pub use ports::AppAddresses;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Starts a machine for a request.
#[async_trait::async_trait]
pub trait Starter: Send + Sync + 'static {
    async fn start(&self, app: &str, machine_id: &str) -> Result<(), String>;
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Apps are reached at `<app>.<app_domain>`.
    pub app_domain: String,
    /// The region this proxy runs in; its machines are preferred.
    pub region: String,
    /// The port `force_https` redirects to (the HTTPS listener's).
    pub https_port: Option<u16>,
    /// How long a machine may take to begin its answer.
    pub response_timeout: Duration,
    /// How long a request may queue while every machine is at its hard limit.
    pub queue_timeout: Duration,
}

pub(crate) struct Inner {
    config: ProxyConfig,
    instances: watch::Receiver<Arc<InstanceSet>>,
    starter: Arc<dyn Starter>,
    load: Arc<Load>,
    certs: Arc<CertTable>,
    /// Bytes out per app, for billing.
    egress: Arc<Egress>,
    next: AtomicUsize,
    /// Machines being started for traffic, each started once however many wait on it.
    wakes: wake::Wakes,
}

/// The proxy, ready to serve.
pub struct Proxy {
    inner: Arc<Inner>,
    addresses: watch::Receiver<Arc<AppAddresses>>,
}

impl Proxy {
    pub fn new(
        config: ProxyConfig,
        instances: watch::Receiver<Arc<InstanceSet>>,
        addresses: watch::Receiver<Arc<AppAddresses>>,
        starter: Arc<dyn Starter>,
        load: Arc<Load>,
        certs: Arc<CertTable>,
        egress: Arc<Egress>,
    ) -> Proxy {
        Proxy {
            inner: Arc::new(Inner {
                config,
                instances,
                starter,
                load,
                certs,
                egress,
                next: AtomicUsize::new(0),
                wakes: wake::Wakes::default(),
            }),
            addresses,
        }
    }

    /// Serves the edge listeners (on one thread per core, as nginx's workers do) and the
    /// app-address listeners until `shutdown`.
    pub async fn serve(
        self,
        http: TcpListener,
        https: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let tls = listen::tls_config(&self.inner, None, listen::HTTP_ALPN);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let plain = listen::workers(&self.inner, http, None, workers, shutdown.clone())?;
        let secure = listen::workers(&self.inner, https, Some(tls), workers, shutdown.clone())?;
        let ports = tokio::spawn(ports::run(self.inner.clone(), self.addresses, shutdown));
        for done in plain.into_iter().chain(secure) {
            let _ = done.await;
        }
        let _ = ports.await;
        Ok(())
    }
}

/// The app a `Host` header names, if it is `<app>.<app_domain>`.
pub fn app_of(host: &str, app_domain: &str) -> Option<String> {
    let host = host.trim().to_ascii_lowercase();
    let name = host
        .rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map_or(host.as_str(), |(h, _)| h);
    let app = name.strip_suffix(app_domain)?.strip_suffix('.')?;
    (!app.is_empty() && !app.contains('.')).then(|| app.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_apps() {
        assert_eq!(
            app_of("web.localhost:8080", "localhost").as_deref(),
            Some("web")
        );
        assert_eq!(
            app_of("WEB.example.com", "example.com").as_deref(),
            Some("web")
        );
        assert_eq!(app_of("localhost", "localhost"), None);
        assert_eq!(app_of("a.b.localhost", "localhost"), None);
        assert_eq!(app_of("web.other.org", "localhost"), None);
    }
}
