//! flyctl's `-p/--port` for `machine run`: `[edge:]internal[/protocol[:handler...]]`,
//! e.g. `80:8080/tcp:http` or `443:8080/tcp:tls:http`. Ports with the same internal
//! port and protocol become one service with several public ports.

use anyhow::{bail, Result};
use hangar_types::machine_config::{Autostop, MachinePort, MachineService};

/// Turns `-p` values into services, with the autostop/autostart settings on each.
pub fn services(
    specs: &[String],
    autostop: Option<Autostop>,
    autostart: Option<bool>,
) -> Result<Vec<MachineService>> {
    let mut out: Vec<MachineService> = Vec::new();
    for spec in specs {
        let (ports, rest) = spec.split_once('/').unwrap_or((spec, "tcp"));
        let mut parts = rest.split(':');
        let protocol = parts.next().unwrap_or("tcp").to_ascii_lowercase();
        if protocol != "tcp" && protocol != "udp" {
            bail!("invalid --port {spec:?}: protocol must be tcp or udp");
        }
        let handlers: Vec<String> = parts.map(str::to_ascii_lowercase).collect();
        for h in &handlers {
            if !["http", "tls", "proxy_proto", "pg_tls"].contains(&h.as_str()) {
                bail!("invalid --port {spec:?}: unknown handler {h:?} (use http, tls, proxy_proto or pg_tls)");
            }
        }
        let number = |s: &str| -> Result<u16> {
            s.parse::<u16>().ok().filter(|n| *n > 0).ok_or_else(|| {
                anyhow::anyhow!("invalid --port {spec:?}: {s:?} is not a port (1-65535)")
            })
        };
        let (edge, internal) = match ports.split_once(':') {
            Some((e, i)) => (Some(number(e)?), number(i)?),
            None => (None, number(ports)?),
        };
        let port = MachinePort {
            port: Some(edge.unwrap_or(internal)),
            handlers: (!handlers.is_empty()).then_some(handlers),
            ..Default::default()
        };
        match out
            .iter_mut()
            .find(|s| s.internal_port == internal && s.protocol == protocol)
        {
            Some(s) => s.ports.get_or_insert_with(Vec::new).push(port),
            None => out.push(MachineService {
                protocol,
                internal_port: internal,
                ports: Some(vec![port]),
                autostop,
                autostart,
                ..Default::default()
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flyctl_port_specs() {
        let s = services(
            &[
                "80:8080/tcp:http".into(),
                "443:8080/tcp:tls:http".into(),
                "5432".into(),
            ],
            Some(Autostop::Stop),
            Some(true),
        )
        .expect("valid");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].internal_port, 8080);
        let ports = s[0].ports.as_ref().expect("ports");
        assert_eq!(ports[0].port, Some(80));
        assert_eq!(
            ports[1].handlers.as_deref(),
            Some(&["tls".to_string(), "http".to_string()][..])
        );
        assert_eq!(s[1].ports.as_ref().expect("ports")[0].port, Some(5432));
        assert!(services(&["80:x".into()], None, None).is_err());
        assert!(services(&["80:8080/sctp".into()], None, None).is_err());
        assert!(services(&["80:8080/tcp:magic".into()], None, None).is_err());
    }
}
