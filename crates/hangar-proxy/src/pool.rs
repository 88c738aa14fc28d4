//! Connections to machines, pooled per proxy thread: a request takes an idle HTTP/1.1
//! connection to its machine's address (or opens one), and the connection comes back
//! once the answer has been read whole. Each worker thread keeps its own pool, so no
//! lock is taken on the request path. Idle connections are dropped after a few seconds,
//! as Fly's proxy does.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// An idle connection is closed after this.
const IDLE_FOR: Duration = Duration::from_secs(4);
/// At most this many idle connections are kept per machine address and thread.
const MAX_IDLE: usize = 256;
/// A machine must accept a connection within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Sender = SendRequest<Body>;

thread_local! {
    static IDLE: RefCell<HashMap<SocketAddr, Vec<(Sender, Instant)>>> = RefCell::default();
}

/// A connection ready for a request, and whether it was reused.
pub struct Checkout {
    pub sender: Sender,
    pub reused: bool,
}

fn take_idle(addr: SocketAddr) -> Option<(Sender, Instant)> {
    IDLE.with(|idle| idle.borrow_mut().get_mut(&addr).and_then(Vec::pop))
}

/// An idle connection to `addr`, or a new one.
pub async fn checkout(addr: SocketAddr) -> Result<Checkout, String> {
    while let Some((mut sender, since)) = take_idle(addr) {
        if since.elapsed() > IDLE_FOR || sender.is_closed() {
            continue;
        }
        if sender.ready().await.is_ok() {
            return Ok(Checkout {
                sender,
                reused: true,
            });
        }
    }
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "machine connection ended");
        }
    });
    Ok(Checkout {
        sender,
        reused: false,
    })
}

/// Returns a connection whose last answer was read whole.
pub fn checkin(addr: SocketAddr, sender: Sender) {
    if sender.is_closed() {
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        list.retain(|(s, since)| since.elapsed() <= IDLE_FOR && !s.is_closed());
        if list.len() < MAX_IDLE {
            list.push((sender, Instant::now()));
        }
    });
}
