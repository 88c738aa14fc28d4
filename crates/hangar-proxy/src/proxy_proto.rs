//! The PROXY protocol header (HAProxy's spec, versions 1 and 2) that the `proxy_proto`
//! handler writes before a connection's first byte, so the machine learns the client's
//! address. Encoding only.

use std::net::SocketAddr;

/// Version 1: one text line.
pub fn v1(client: SocketAddr, proxy: SocketAddr) -> Vec<u8> {
    let (client, proxy) = same_family(client, proxy);
    let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        client.ip(),
        proxy.ip(),
        client.port(),
        proxy.port()
    )
    .into_bytes()
}

/// Version 2: the binary form.
pub fn v2(client: SocketAddr, proxy: SocketAddr) -> Vec<u8> {
    const SIGNATURE: [u8; 12] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
    ];
    let (client, proxy) = same_family(client, proxy);
    let mut out = SIGNATURE.to_vec();
    out.push(0x21); // version 2, PROXY command
    let mut addrs = Vec::new();
    match (client, proxy) {
        (SocketAddr::V4(c), SocketAddr::V4(p)) => {
            out.push(0x11); // TCP over IPv4
            addrs.extend_from_slice(&c.ip().octets());
            addrs.extend_from_slice(&p.ip().octets());
        }
        (c, p) => {
            out.push(0x21); // TCP over IPv6
            addrs.extend_from_slice(&v6(c).octets());
            addrs.extend_from_slice(&v6(p).octets());
        }
    }
    addrs.extend_from_slice(&client.port().to_be_bytes());
    addrs.extend_from_slice(&proxy.port().to_be_bytes());
    out.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&addrs);
    out
}

fn v6(a: SocketAddr) -> std::net::Ipv6Addr {
    match a {
        SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
        SocketAddr::V6(a) => *a.ip(),
    }
}

/// Both addresses in one family (IPv4-mapped IPv6 when they differ).
fn same_family(client: SocketAddr, proxy: SocketAddr) -> (SocketAddr, SocketAddr) {
    if client.is_ipv4() == proxy.is_ipv4() {
        (client, proxy)
    } else {
        (
            SocketAddr::new(v6(client).into(), client.port()),
            SocketAddr::new(v6(proxy).into(), proxy.port()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_both_versions() {
        let c: SocketAddr = "10.0.0.1:5555".parse().expect("addr");
        let p: SocketAddr = "127.0.1.2:7000".parse().expect("addr");
        assert_eq!(v1(c, p), b"PROXY TCP4 10.0.0.1 127.0.1.2 5555 7000\r\n");
        let h = v2(c, p);
        assert_eq!(h.len(), 16 + 12);
        assert_eq!(&h[12..16], &[0x21, 0x11, 0x00, 0x0c]);
        assert_eq!(&h[16..20], &[10, 0, 0, 1]);
        assert_eq!(&h[24..26], &5555u16.to_be_bytes());
    }
}
