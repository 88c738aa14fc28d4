//! Connections from this host into an org's private network, for `hangar proxy`: where
//! a private name leads (the same `.internal` names machines resolve, from the live
//! instance set) and a TCP connection to it. An org reaches only its own network: a
//! name of another org does not exist for it and an address outside its `/48` is
//! refused. Carrying the bytes to the user is the caller's job (the control plane's
//! tunnel route); this module only resolves and dials.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::dns::names::{Answer, Kind};
use crate::dns::{org_of, View};
use crate::supervisor::OpError;

/// How long a dial to one address may take before the next is tried.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes moved per read each way when splicing a tunnel (the default 8 KiB costs a
/// system call per 8 KiB on a bulk transfer).
const SPLICE_BUFFER: usize = 256 * 1024;

/// Whose turn it is among a name's addresses.
static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A two-way byte stream to something on a private network.
pub trait TunnelIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> TunnelIo for T {}

/// An open connection, boxed so any transport can carry it.
pub type Tunnel = Box<dyn TunnelIo>;

/// A place on an org's private network: a private name or one of its 6PN addresses,
/// and a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateTarget {
    /// The org number of the network (`fdaa:0:<org>::/48`).
    pub org: u16,
    /// `<app>.internal`, `<id>.vm.<app>.internal`, `<app>.flycast`, ... or an address.
    pub host: String,
    pub port: u16,
}

/// Where `host` leads on network `org`, asked from `region` (what "nearest" means):
/// its addresses, or an error that says why there are none.
pub fn resolve(view: &View, org: u16, host: &str, region: &str) -> Result<Vec<Ipv6Addr>, OpError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(address) = bare.parse::<Ipv6Addr>() {
        return if org_of(&address) == Some(org) {
            Ok(vec![address])
        } else {
            Err(OpError::Invalid(format!(
                "{address} is not on this app's private network (fdaa:0:{org:x}::/48)"
            )))
        };
    }
    let answer = match view.networks.get(&org) {
        Some(network) => network.answer(bare, Kind::Aaaa, Some(region)),
        None => crate::dns::names::Network::default().answer(bare, Kind::Aaaa, Some(region)),
    };
    match answer {
        Answer::Aaaa(addresses) => Ok(addresses),
        Answer::NoData | Answer::Txt(_) => Err(OpError::Precondition(format!(
            "{bare} has no started machine: start one (`hangar machine start`) or check `hangar status`"
        ))),
        Answer::NxDomain => Err(OpError::Invalid(format!(
            "no such private name {bare} on this org's network: check the app's name (`hangar apps list`) or use <app>.internal"
        ))),
        Answer::Elsewhere => Err(OpError::Invalid(format!(
            "{bare} is not a private name: give <app>.internal, <machine id>.vm.<app>.internal, <region>.<app>.internal or a 6PN address"
        ))),
    }
}

/// Dials `target` from this host: the first of its addresses that accepts.
pub async fn dial(
    view: &View,
    target: &PrivateTarget,
    region: &str,
) -> Result<(TcpStream, SocketAddr), OpError> {
    if target.port == 0 {
        return Err(OpError::Invalid("port must be between 1 and 65535".into()));
    }
    let mut addresses = resolve(view, target.org, &target.host, region)?;
    // Connections to a name with many machines take turns among them.
    let turn = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let len = addresses.len().max(1);
    addresses.rotate_left(turn % len);
    let mut last = String::new();
    for address in addresses {
        let to = SocketAddr::from((address, target.port));
        match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(to)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, to));
            }
            Ok(Err(e)) => last = format!("{e} on {to}"),
            Err(_) => last = format!("no answer within {}s from {to}", DIAL_TIMEOUT.as_secs()),
        }
    }
    Err(OpError::Precondition(format!(
        "cannot connect to {}:{}: {last}; is the service listening on that port? check `hangar status`",
        target.host, target.port
    )))
}

/// The `Upgrade` protocol a tunnel request asks for and its `101` answer names.
pub const TUNNEL_PROTOCOL: &str = "hangar-tunnel";

/// Whether a request asks to become a tunnel (`Connection: upgrade`,
/// `Upgrade: hangar-tunnel`).
pub fn wants_tunnel(headers: &axum::http::HeaderMap) -> bool {
    let has = |name: axum::http::HeaderName, want: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(want))
    };
    has(axum::http::header::CONNECTION, "upgrade")
        && has(axum::http::header::UPGRADE, TUNNEL_PROTOCOL)
}

/// Answers `request` with `101 Switching Protocols` and, once the client has switched,
/// carries bytes both ways between it and `tunnel` until either side closes. The
/// request must come from a server that keeps upgrades (axum's does).
pub fn splice(request: &mut axum::extract::Request, tunnel: Tunnel) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let Some(upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return (
            StatusCode::BAD_REQUEST,
            "this connection cannot be upgraded to a tunnel (HTTP/1.1 only)",
        )
            .into_response();
    };
    tokio::spawn(async move {
        let mut tunnel = tunnel;
        match upgrade.await {
            Ok(upgraded) => {
                let mut client = hyper_util::rt::TokioIo::new(upgraded);
                if let Err(e) = tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut tunnel,
                    SPLICE_BUFFER,
                    SPLICE_BUFFER,
                )
                .await
                {
                    tracing::debug!(error = %e, "tunnel closed");
                }
            }
            Err(e) => tracing::debug!(error = %e, "tunnel client never switched"),
        }
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, "upgrade"),
            (header::UPGRADE, TUNNEL_PROTOCOL),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use hangar_proxy::{Health, Instance, PrivateName};

    use super::*;

    fn instance(id: &str, app: &str, address: &str, state: &str) -> Instance {
        Instance {
            machine_id: id.into(),
            app: app.into(),
            region: "ord".into(),
            state: state.into(),
            cordoned: false,
            address: None,
            health: Health::Passing,
            started_at: None,
            services: Vec::new(),
            private: Some(Arc::new(PrivateName {
                address: address.parse().unwrap(),
                registered: true,
                process_group: "app".into(),
                metadata: BTreeMap::new(),
            })),
        }
    }

    fn set() -> View {
        let mut set = hangar_proxy::InstanceSet::default();
        set.insert(
            "db".into(),
            Arc::new(vec![
                instance("0001", "db", "fdaa:0:1:a7b:1::2", "started"),
                instance("0002", "db", "fdaa:0:1:a7b:2::2", "stopped"),
            ]),
        );
        set.insert(
            "other".into(),
            Arc::new(vec![instance(
                "0003",
                "other",
                "fdaa:0:2:a7b:3::2",
                "started",
            )]),
        );
        let mut addresses = hangar_proxy::AppAddresses::new();
        addresses.insert("fdaa:0:1:0:1::5".parse().unwrap(), "db".into());
        View::of(&set, &addresses, &[])
    }

    #[test]
    fn names_of_the_org_lead_to_started_machines_only() {
        let s = set();
        assert_eq!(
            resolve(&s, 1, "db.internal", "ord").unwrap(),
            vec!["fdaa:0:1:a7b:1::2".parse::<Ipv6Addr>().unwrap()]
        );
        assert_eq!(
            resolve(&s, 1, "0001.vm.db.internal", "ord").unwrap().len(),
            1
        );
        let e = resolve(&s, 1, "0002.vm.db.internal", "ord").unwrap_err();
        assert!(e.to_string().contains("no started machine"), "{e}");
        assert_eq!(
            resolve(&s, 1, "db.flycast", "ord").unwrap(),
            vec!["fdaa:0:1:0:1::5".parse::<Ipv6Addr>().unwrap()]
        );
    }

    #[test]
    fn another_orgs_names_and_addresses_are_out_of_reach() {
        let s = set();
        let e = resolve(&s, 1, "other.internal", "ord").unwrap_err();
        assert!(e.to_string().contains("no such private name"), "{e}");
        let e = resolve(&s, 1, "[fdaa:0:2:a7b:3::2]", "ord").unwrap_err();
        assert!(
            e.to_string().contains("not on this app's private network"),
            "{e}"
        );
        let e = resolve(&s, 1, "example.com", "ord").unwrap_err();
        assert!(e.to_string().contains("not a private name"), "{e}");
        assert!(resolve(&s, 2, "fdaa:0:2:a7b:3::2", "ord").is_ok());
    }
}
