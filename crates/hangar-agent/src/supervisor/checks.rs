//! Health checks of started machines: top-level `checks` and service checks
//! (`servicecheck-<NN>-<type>-<port>`), `http` or `tcp`, every `interval` after `grace_period`,
//! each bounded by `timeout`. Results are kept per machine for the API's `checks`
//! array; the health of a machine's service checks is published to the proxy, which
//! routes only to machines whose service checks pass.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_proxy::Health;
use hangar_types::machine_config::MachineCheck;
use hangar_types::CheckState;
use hangar_types::{CheckStatus, MachineConfig};
use tokio_util::sync::CancellationToken;

use super::instances::Instances;
use crate::clock;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Latest check results, by machine.
#[derive(Default)]
pub struct CheckResults {
    by_machine: Mutex<HashMap<String, Vec<CheckStatus>>>,
}

impl CheckResults {
    pub fn of(&self, machine_id: &str) -> Vec<CheckStatus> {
        let map = self.by_machine.lock().unwrap_or_else(|p| p.into_inner());
        map.get(machine_id).cloned().unwrap_or_default()
    }

    fn record(&self, machine_id: &str, status: CheckStatus) {
        let mut map = self.by_machine.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(machine_id.to_string()).or_default();
        match list.iter_mut().find(|c| c.name == status.name) {
            Some(c) => *c = status,
            None => {
                list.push(status);
                list.sort_by(|a, b| a.name.cmp(&b.name));
            }
        }
    }

    /// What the machine's service checks say together: failing when one fails, pending
    /// while one has not run yet, else passing.
    fn services_health(&self, machine_id: &str, names: &[String]) -> Health {
        let map = self.by_machine.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.get(machine_id);
        let mut health = Health::Passing;
        for n in names {
            match list.and_then(|l| l.iter().find(|c| &c.name == n)) {
                Some(c) if c.status != CheckState::Passing => return Health::Failing,
                Some(_) => {}
                None => health = Health::Pending,
            }
        }
        health
    }

    pub fn forget(&self, machine_id: &str) {
        let mut map = self.by_machine.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(machine_id);
    }
}

/// A check to run: its name, whether the proxy depends on it, where, and how.
struct Planned {
    name: String,
    service: bool,
    port: u16,
    check: MachineCheck,
}

fn plan(config: &MachineConfig) -> Vec<Planned> {
    let mut out = Vec::new();
    for (name, check) in config.checks.iter().flatten() {
        if let Some(port) = check.port {
            out.push(Planned {
                name: name.clone(),
                service: false,
                port,
                check: check.clone(),
            });
        }
    }
    // Named as Fly names them: servicecheck-<NN>-<type>-<port>.
    let mut n = 0;
    for svc in config.services.iter().flatten() {
        for check in svc.checks.iter().flatten() {
            let kind = check.check_type.as_deref().unwrap_or("tcp");
            let name = format!("servicecheck-{n:02}-{kind}-{}", svc.internal_port);
            n += 1;
            out.push(Planned {
                name,
                service: true,
                port: check.port.unwrap_or(svc.internal_port),
                check: check.clone(),
            });
        }
    }
    out
}

/// Whether the config has any check to run.
pub fn has_checks(config: &MachineConfig) -> bool {
    !plan(config).is_empty()
}

/// Names of the service checks a config has: the proxy waits for these to pass.
pub fn service_check_names(config: &MachineConfig) -> Vec<String> {
    plan(config)
        .into_iter()
        .filter(|p| p.service)
        .map(|p| p.name)
        .collect()
}

/// The headers an HTTP check sends: the Machines API's `[{"name", "values"}]`, or a
/// map of name to a value or values (fly.toml's shape).
fn check_headers(check: &MachineCheck) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match &check.headers {
        Some(serde_json::Value::Array(list)) => {
            for h in list {
                let Some(name) = h.get("name").and_then(|n| n.as_str()) else {
                    continue;
                };
                for v in h
                    .get("values")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                {
                    if let Some(v) = v.as_str() {
                        out.push((name.to_string(), v.to_string()));
                    }
                }
            }
        }
        Some(serde_json::Value::Object(map)) => {
            for (name, v) in map {
                match v {
                    serde_json::Value::String(s) => out.push((name.clone(), s.clone())),
                    serde_json::Value::Array(vs) => out.extend(
                        vs.iter()
                            .filter_map(|v| v.as_str())
                            .map(|v| (name.clone(), v.to_string())),
                    ),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    out
}

/// One HTTP(S) request of an `http` check; redirects are not followed, as on Fly.
async fn http_probe(
    addr: SocketAddr,
    check: &MachineCheck,
    timeout: Duration,
) -> Result<String, String> {
    let method = check
        .method
        .as_deref()
        .unwrap_or("GET")
        .to_ascii_uppercase();
    let path = check
        .path
        .as_deref()
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/");
    let tls = check.protocol.as_deref() == Some("https");
    let host = check
        .tls_server_name
        .clone()
        .filter(|n| tls && !n.is_empty())
        .unwrap_or_else(|| "machine.internal".to_string());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(check.tls_skip_verify.unwrap_or(false))
        .resolve(&host, addr)
        .timeout(timeout)
        .user_agent("hangar-check")
        .build()
        .map_err(|e| format!("cannot build the check's client: {e}"))?;
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{}{path}", addr.port());
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("invalid check method {method:?}"))?;
    let mut req = client.request(method.clone(), &url);
    for (name, value) in check_headers(check) {
        req = req.header(name, value);
    }
    let resp = req.send().await.map_err(|e| {
        let mut cause = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            cause = format!("{cause}: {s}");
            src = s.source();
        }
        format!("{method} {path}: {cause}")
    })?;
    let status = resp.status();
    let line = format!("{method} {path}: {status}");
    if status.is_success() || status.is_redirection() {
        Ok(line)
    } else {
        Err(line)
    }
}

/// One run of one check: `Ok(output)` when it passes.
async fn probe(addr: SocketAddr, check: &MachineCheck) -> Result<String, String> {
    let timeout = check
        .timeout
        .map(|t| t.0)
        .filter(|t| !t.is_zero())
        .unwrap_or(DEFAULT_TIMEOUT);
    if check.check_type.as_deref() == Some("http") {
        return http_probe(addr, check, timeout).await;
    }
    let connect = tokio::net::TcpStream::connect(addr);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(_)) => Ok(format!("connected to {addr}")),
        Ok(Err(e)) => Err(format!("connect to {addr}: {e}")),
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs_f32())),
    }
}

/// Runs the machine's checks until `cancel`, recording results and publishing the
/// health of its service checks.
pub fn spawn(
    results: Arc<CheckResults>,
    instances: Arc<Instances>,
    machine_id: String,
    config: &MachineConfig,
    address: IpAddr,
    cancel: CancellationToken,
) {
    let planned = plan(config);
    if planned.is_empty() {
        return;
    }
    let service_names = service_check_names(config);
    for p in planned {
        let (results, instances, id, names, cancel) = (
            results.clone(),
            instances.clone(),
            machine_id.clone(),
            service_names.clone(),
            cancel.clone(),
        );
        tokio::spawn(async move {
            let grace = p.check.grace_period.map(|g| g.0).unwrap_or_default();
            let interval = p
                .check
                .interval
                .map(|i| i.0)
                .filter(|i| !i.is_zero())
                .unwrap_or(DEFAULT_INTERVAL);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(grace) => {}
            }
            loop {
                let outcome = probe(SocketAddr::new(address, p.port), &p.check).await;
                if cancel.is_cancelled() {
                    return;
                }
                let (status, output) = match outcome {
                    Ok(o) => (CheckState::Passing, o),
                    Err(e) => (CheckState::Critical, e),
                };
                results.record(
                    &id,
                    CheckStatus {
                        name: p.name.clone(),
                        status,
                        output,
                        updated_at: clock::rfc3339_now(),
                    },
                );
                if p.service {
                    instances.set_health(&id, results.services_health(&id, &names));
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        });
    }
}
