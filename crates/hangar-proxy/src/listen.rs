//! Accepting connections: TLS handshakes (certificate by SNI, ALPN `h2`/`http/1.1`, and
//! `acme-tls/1` validation handshakes that end there), then HTTP/1.1 or HTTP/2 served by
//! hyper with limits that keep a slow or hostile client from tying the proxy up: a
//! deadline for the TLS handshake and for request headers, and a cap on header size.
//! What a request does once parsed is `http`'s concern.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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

/// A connection handed to a worker thread.
type Handoff = (std::net::TcpStream, SocketAddr);

/// Serves an edge listener on `n` worker threads, each with its own single-threaded
/// runtime, as nginx's workers do: a client connection, its requests and the machine
/// connections they use stay on one thread, without cross-thread wakeups. One acceptor
/// hands each new connection to the worker with the fewest open ones, so load spreads
/// evenly. Each returned receiver completes when its worker has drained and stopped.
pub fn workers(
    inner: &Arc<Inner>,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    n: usize,
    shutdown: CancellationToken,
) -> std::io::Result<Vec<tokio::sync::oneshot::Receiver<()>>> {
    let mut lanes = Vec::new();
    let mut done = Vec::new();
    for i in 0..n.max(1) {
        let (handoff, mut incoming) = tokio::sync::mpsc::unbounded_channel::<Handoff>();
        let open = Arc::new(AtomicUsize::new(0));
        lanes.push((handoff, open.clone()));
        let (inner, tls, shutdown) = (inner.clone(), tls.clone(), shutdown.clone());
        let (finished, rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("proxy-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let connections = tokio_util::task::TaskTracker::new();
                    loop {
                        let (stream, peer) = tokio::select! {
                            _ = shutdown.cancelled() => break,
                            got = incoming.recv() => match got {
                                Some(h) => h,
                                None => break,
                            },
                        };
                        let Ok(stream) = TcpStream::from_std(stream) else {
                            open.fetch_sub(1, Ordering::Relaxed);
                            continue;
                        };
                        let (inner, tls, open) = (inner.clone(), tls.clone(), open.clone());
                        let shutdown = shutdown.clone();
                        connections.spawn(async move {
                            connection(inner, stream, peer, tls, shutdown).await;
                            open.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                    // Connections finish their requests (they were told to close) first.
                    connections.close();
                    let _ = tokio::time::timeout(DRAIN, connections.wait()).await;
                });
                let _ = finished.send(());
            })?;
        done.push(rx);
    }
    tokio::spawn(accept(listener, lanes, shutdown));
    Ok(done)
}

/// Accepts edge connections and hands each to the least busy worker.
async fn accept(
    listener: TcpListener,
    lanes: Vec<(
        tokio::sync::mpsc::UnboundedSender<Handoff>,
        Arc<AtomicUsize>,
    )>,
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
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let Some((lane, open)) = lanes
            .iter()
            .min_by_key(|(_, open)| open.load(Ordering::Relaxed))
        else {
            return;
        };
        open.fetch_add(1, Ordering::Relaxed);
        if lane.send((stream, peer)).is_err() {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Serves one edge connection: TLS first when the listener has it, then HTTP.
async fn connection(
    inner: Arc<Inner>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let conn = Conn {
        origin: Origin::new(peer, local, tls.is_some()),
        app: None,
        entry: Entry::Edge,
    };
    match tls {
        None => serve_conn(inner, stream, conn, false, shutdown).await,
        Some(config) => {
            if let Some(stream) = handshake(stream, config, peer).await {
                let h2 = is_h2(&stream);
                serve_conn(inner, stream, conn, h2, shutdown).await;
            }
        }
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

/// Runs a served connection until it ends, or until shutdown asks it to finish its
/// requests and close (waiting at most [`DRAIN`]).
macro_rules! drive {
    ($served:expr, $shutdown:expr) => {{
        let served = $served;
        tokio::pin!(served);
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            _ = $shutdown.cancelled() => {
                served.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN, served).await;
            }
        }
    }};
}

/// Serves one connection: HTTP/2 when ALPN chose it, else HTTP/1.1 with upgrades.
pub async fn serve_conn<S>(
    inner: Arc<Inner>,
    io: S,
    conn: Conn,
    h2: bool,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let svc = service_fn(move |req| http::handle(inner.clone(), conn.clone(), req));
    if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD_BYTES as u32);
        drive!(builder.serve_connection(TokioIo::new(io), svc), shutdown);
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES)
            .max_header_size(MAX_HEAD_BYTES)
            // A client that shuts its side after the request (`nc`, some scripts)
            // still gets the answer, as nginx gives it.
            .half_close(true);
        drive!(
            builder
                .serve_connection(TokioIo::new(io), svc)
                .with_upgrades(),
            shutdown
        );
    }
}

/// Whether a TLS connection agreed on HTTP/2.
pub fn is_h2<S>(stream: &tokio_rustls::server::TlsStream<S>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(b"h2")
}
