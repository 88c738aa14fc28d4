//! Listeners on apps' own addresses: for every address an app holds and every port its
//! machines' services declare, one listener, opened and closed as addresses and machine
//! configs change. Each connection is served by the port's handlers as they are when it
//! arrives: `http` (over `tls` when listed) through the HTTP path, otherwise raw TCP to
//! a chosen machine, TLS-terminated for `tls` and prefixed for `proxy_proto`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::forward::Origin;
use crate::http::Conn;
use crate::instance::{Entry, Handler, Port};
use crate::listen;
use crate::route::{self, Want};
use crate::{proxy_proto, Inner};

/// Addresses an app holds, each mapped to the app.
pub type AppAddresses = HashMap<IpAddr, String>;

/// At most this many ports of one range get listeners.
const MAX_RANGE: u16 = 256;

/// Which (address, port) pairs should listen, and for which app.
fn desired(inner: &Inner, addresses: &AppAddresses) -> HashMap<SocketAddr, String> {
    let set = inner.instances.borrow().clone();
    let mut out = HashMap::new();
    for (ip, app) in addresses {
        let Some(list) = set.get(app) else { continue };
        for port in list.iter().flat_map(|i| &i.services).flat_map(|s| &s.ports) {
            let end = port.end.min(port.start.saturating_add(MAX_RANGE - 1));
            for n in port.start..=end {
                out.insert(SocketAddr::new(*ip, n), app.clone());
            }
        }
    }
    out
}

/// Keeps the listeners matching the app addresses and machine configs until `shutdown`.
pub async fn run(
    inner: Arc<Inner>,
    mut addresses: watch::Receiver<Arc<AppAddresses>>,
    shutdown: CancellationToken,
) {
    let mut open: HashMap<SocketAddr, (String, CancellationToken)> = HashMap::new();
    let mut failed: HashSet<SocketAddr> = HashSet::new();
    let mut instances = inner.instances.clone();
    loop {
        let want = desired(&inner, &addresses.borrow().clone());
        open.retain(|addr, (app, token)| {
            let keep = want.get(addr) == Some(app);
            if !keep {
                token.cancel();
            }
            keep
        });
        failed.retain(|a| want.contains_key(a));
        for (addr, app) in want {
            if open.contains_key(&addr) || failed.contains(&addr) {
                continue;
            }
            match bind(addr) {
                Ok(listener) => {
                    tracing::info!(%addr, %app, "listening on an app address");
                    let token = shutdown.child_token();
                    tokio::spawn(serve(inner.clone(), listener, app.clone(), token.clone()));
                    open.insert(addr, (app, token));
                }
                Err(e) => {
                    tracing::warn!(%addr, %app, error = %e, "cannot listen on an app address (ports below 1024 and addresses outside loopback need root)");
                    failed.insert(addr);
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = addresses.changed() => if r.is_err() { return },
            r = instances.changed() => if r.is_err() { return },
        }
    }
}

/// Binds with `IP_FREEBIND`, so an address routed to this host (a local route for the
/// whole IPv6 pool) can be bound without being assigned to an interface.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    } else {
        socket.set_freebind_v4(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// The port entry (handlers, options) the app's machines declare for `port`.
fn port_of(inner: &Inner, app: &str, port: u16) -> Option<Port> {
    let set = inner.instances.borrow().clone();
    set.get(app)?
        .iter()
        .flat_map(|i| &i.services)
        .find_map(|s| s.port(Entry::Port(port)).cloned())
}

async fn serve(inner: Arc<Inner>, listener: TcpListener, app: String, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let inner = inner.clone();
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = connection(inner, stream, peer, app, shutdown).await;
        });
    }
}

async fn connection(
    inner: Arc<Inner>,
    stream: TcpStream,
    peer: SocketAddr,
    app: String,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr()?;
    let Some(port) = port_of(&inner, &app, local.port()) else {
        return Ok(());
    };
    let entry = Entry::Port(local.port());
    let tls = port.has(&Handler::Tls).then(|| {
        let alpn: Vec<&[u8]> = if port.has(&Handler::Http) {
            listen::HTTP_ALPN.to_vec()
        } else {
            port.alpn.iter().map(|p| p.as_bytes()).collect()
        };
        let fallback = format!("{app}.{}", inner.config.app_domain);
        listen::tls_config(&inner, Some(fallback), &alpn)
    });
    let conn = Conn {
        origin: Origin::new(peer, local, tls.is_some()),
        app: Some(app.clone()),
        entry,
    };
    if port.has(&Handler::Http) {
        match tls {
            None => listen::serve_conn(inner, stream, conn, false, shutdown).await,
            Some(config) => {
                if let Some(s) = listen::handshake(stream, config, peer).await {
                    let h2 = listen::is_h2(&s);
                    listen::serve_conn(inner, s, conn, h2, shutdown).await;
                }
            }
        }
        return Ok(());
    }
    match tls {
        None => splice(&inner, stream, peer, local, &app, &port).await,
        Some(config) => match listen::handshake(stream, config, peer).await {
            Some(client) => splice(&inner, client, peer, local, &app, &port).await,
            None => Ok(()),
        },
    }
}

/// Passes a connection's bytes to a chosen machine, after a PROXY header if asked.
async fn splice<S>(
    inner: &Inner,
    mut client: S,
    peer: SocketAddr,
    local: SocketAddr,
    app: &str,
    port: &Port,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let want = Want::app(app, Entry::Port(local.port()));
    // Counted against the machine from the moment it is picked until the connection ends.
    let route::Routed {
        target,
        load: _counted,
    } = match route::route(inner, &want).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(%app, port = local.port(), error = %e, "no machine for a connection");
            return Ok(());
        }
    };
    let mut machine = TcpStream::connect(target.addr).await?;
    let _ = machine.set_nodelay(true);
    if port.has(&Handler::ProxyProto) {
        let header = if port.proxy_proto_v2 {
            proxy_proto::v2(peer, local)
        } else {
            proxy_proto::v1(peer, local)
        };
        machine.write_all(&header).await?;
    }
    let (_, out) = tokio::io::copy_bidirectional(&mut client, &mut machine).await?;
    inner
        .egress
        .counter(app)
        .fetch_add(out, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}
