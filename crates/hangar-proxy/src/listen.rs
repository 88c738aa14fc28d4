//! Accepting connections: TLS handshakes (certificate by SNI, ALPN `h2`/`http/1.1`, and
//! `acme-tls/1` validation handshakes that end there), then HTTP/1.1 or HTTP/2 served by
//! hyper with limits that keep a slow or hostile client from tying the proxy up: a
//! deadline for the TLS handshake and for request headers, and a cap on header size.
//! What a request does once parsed is `http`'s concern.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::certs::{Resolver, ACME_TLS_ALPN};
use crate::forward::Origin;
use crate::http::{self, Conn};
use crate::instance::Entry;
use crate::Inner;

/// A client must finish its TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client must send a request's headers within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Request heads larger than this get 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long open connections may finish their requests after shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// The TLS settings of a listener: certificates from the hostname table, with
/// `fallback`'s certificate for clients that send no SNI.
pub fn tls_config(inner: &Inner, fallback: Option<String>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let resolver = Resolver {
        table: inner.certs.clone(),
        fallback,
    };
    let builder = ServerConfig::builder_with_provider(Arc::new(crate::certs::provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12]);
    let mut config = match builder {
        Ok(b) => b
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver)),
        // The provider supports both versions; this cannot fail, but never panic.
        Err(_) => ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver)),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    Arc::new(config)
}

/// The edge listeners' ALPN: HTTP/2 first, as Fly offers it.
pub const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Accepts HTTP (over TLS when `tls` is set) until `shutdown`.
pub async fn serve_http(
    inner: Arc<Inner>,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: Option<String>,
    entry: Entry,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let inner = inner.clone();
        let tls = tls.clone();
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(local) = stream.local_addr() else {
                return;
            };
            let conn = Conn {
                origin: Origin {
                    peer,
                    local,
                    tls: tls.is_some(),
                },
                app,
                entry,
            };
            match tls {
                None => serve_conn(inner, stream, conn, shutdown).await,
                Some(config) => {
                    if let Some(stream) = handshake(stream, config, peer).await {
                        serve_conn(inner, stream, conn, shutdown).await;
                    }
                }
            }
        });
    }
}

/// Completes a TLS handshake; `None` when it fails or was an ACME validation.
pub async fn handshake(
    stream: TcpStream,
    config: Arc<ServerConfig>,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let accepted =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(stream));
    match accepted.await {
        Ok(Ok(s)) => {
            if s.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
                tracing::info!(%peer, "answered a TLS-ALPN-01 validation");
                return None;
            }
            Some(s)
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 (by preface) on one connection, with upgrades.
pub async fn serve_conn<S>(inner: Arc<Inner>, io: S, conn: Conn, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let svc = service_fn(move |req| http::handle(inner.clone(), conn.clone(), req));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    let served = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(served);
    tokio::select! {
        result = served.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            served.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, served).await;
        }
    }
}
