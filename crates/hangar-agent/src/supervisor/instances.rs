//! The live set of instances: every machine as the edge proxy sees it (state, cordon,
//! address, services), republished on a watch channel whenever one changes. Actors
//! write it; the proxy only reads it, never the store.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use hangar_proxy::{
    AutostopMode, Handler, Health, Instance, InstanceSet, Port, PrivateName, Service,
};
use hangar_store::MachineRecord;
use hangar_types::machine_config::{Autostop, MachinePort};
use hangar_types::MachineState;
use tokio::sync::watch;

/// Fly's default `concurrency.soft_limit`.
const DEFAULT_SOFT_LIMIT: u32 = 20;

pub struct Instances {
    /// Machines by app, then by ID.
    by_app: Mutex<HashMap<String, HashMap<String, Instance>>>,
    tx: watch::Sender<Arc<InstanceSet>>,
}

impl Default for Instances {
    fn default() -> Self {
        Self {
            by_app: Mutex::default(),
            tx: watch::channel(Arc::default()).0,
        }
    }
}

/// The proxy's view of a stored machine.
pub fn instance_of(m: &MachineRecord, address: Option<IpAddr>) -> Instance {
    let services = m
        .config
        .services
        .iter()
        .flatten()
        .filter(|s| s.internal_port != 0 && (s.protocol.is_empty() || s.protocol == "tcp"))
        .map(|s| Service {
            internal_port: s.internal_port,
            ports: s.ports.iter().flatten().filter_map(port_of).collect(),
            autostart: s.autostart.unwrap_or(true)
                && m.config.disable_machine_autostart != Some(true),
            autostop: match s.autostop {
                Some(Autostop::Stop) => AutostopMode::Stop,
                Some(Autostop::Suspend) => AutostopMode::Suspend,
                Some(Autostop::Off) | None => AutostopMode::Off,
            },
            soft_limit: s
                .concurrency
                .as_ref()
                .and_then(|c| c.soft_limit)
                .unwrap_or(DEFAULT_SOFT_LIMIT) as usize,
            min_machines_running: s.min_machines_running.unwrap_or(0) as usize,
            hard_limit: s
                .concurrency
                .as_ref()
                .and_then(|c| c.hard_limit)
                .map(|h| h as usize),
        })
        .collect();
    Instance {
        machine_id: m.id.clone(),
        app: m.app_name.clone(),
        region: m.region.clone(),
        state: m.state.to_string(),
        cordoned: m.cordoned,
        address,
        // Nothing has been checked yet in this run of the machine.
        health: if super::checks::service_check_names(&m.config).is_empty() {
            Health::Passing
        } else {
            Health::Pending
        },
        started_at: None,
        services,
        private: private_name(m).map(Arc::new),
    }
}

/// The machine's place on its private network, unless it has no 6PN address.
fn private_name(m: &MachineRecord) -> Option<PrivateName> {
    let skip = m
        .config
        .dns
        .as_ref()
        .and_then(|d| d.get("skip_registration"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let address = m.private_ip.parse().ok()?;
    let metadata = m.config.metadata.clone().unwrap_or_default();
    let process_group = metadata
        .get("fly_process_group")
        .cloned()
        .unwrap_or_else(|| "app".into());
    Some(PrivateName {
        address,
        registered: !skip,
        process_group,
        metadata,
    })
}

/// A service port as the proxy uses it; `None` when it names no port.
fn port_of(p: &MachinePort) -> Option<Port> {
    let (start, end) = match (p.port, p.start_port, p.end_port) {
        (Some(n), _, _) => (n, n),
        (None, Some(a), Some(b)) if a <= b => (a, b),
        (None, Some(a), None) => (a, a),
        _ => return None,
    };
    let option =
        |v: &Option<serde_json::Value>, key: &str| v.as_ref().and_then(|o| o.get(key).cloned());
    Some(Port {
        start,
        end,
        handlers: p
            .handlers
            .iter()
            .flatten()
            .map(|h| Handler::parse(&h.to_ascii_lowercase()))
            .collect(),
        force_https: p.force_https.unwrap_or(false),
        proxy_proto_v2: option(&p.proxy_proto_options, "version")
            .is_some_and(|v| v.as_str() == Some("v2")),
        alpn: option(&p.tls_options, "alpn")
            .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
            .unwrap_or_default(),
    })
}

impl Instances {
    pub fn subscribe(&self) -> watch::Receiver<Arc<InstanceSet>> {
        self.tx.subscribe()
    }

    /// Records the machine's current view (or drops it once destroyed) and republishes;
    /// only the machine's app's list is rebuilt.
    pub fn put(&self, instance: Instance) {
        let mut by_app = self.by_app.lock().unwrap_or_else(|p| p.into_inner());
        let app = instance.app.clone();
        let machines = by_app.entry(app.clone()).or_default();
        if instance.state == MachineState::Destroyed.as_str() {
            machines.remove(&instance.machine_id);
        } else {
            let mut instance = instance;
            // A machine that stays started keeps the health its checks last reported,
            // and the moment its run began.
            let prev = machines
                .get(&instance.machine_id)
                .filter(|p| p.state == "started" && instance.state == "started");
            match prev {
                Some(prev) => {
                    instance.health = prev.health;
                    instance.started_at = prev.started_at;
                }
                None if instance.state == "started" => {
                    instance.started_at = Some(std::time::Instant::now());
                }
                None => {}
            }
            machines.insert(instance.machine_id.clone(), instance);
        }
        self.publish(&mut by_app, app);
    }

    /// Records what the machine's service checks say and republishes.
    pub fn set_health(&self, machine_id: &str, health: Health) {
        let mut by_app = self.by_app.lock().unwrap_or_else(|p| p.into_inner());
        let Some((app, i)) = by_app
            .iter_mut()
            .find_map(|(app, list)| list.get_mut(machine_id).map(|i| (app.clone(), i)))
        else {
            return;
        };
        if i.health == health {
            return;
        }
        i.health = health;
        self.publish(&mut by_app, app);
    }

    /// Rebuilds the app's list and sends the new set.
    fn publish(&self, by_app: &mut HashMap<String, HashMap<String, Instance>>, app: String) {
        let machines = by_app.entry(app.clone()).or_default();
        let mut list: Vec<Instance> = machines.values().cloned().collect();
        list.sort_by(|a, b| a.machine_id.cmp(&b.machine_id));
        if list.is_empty() {
            by_app.remove(&app);
        }
        self.tx.send_modify(|set| {
            let set = Arc::make_mut(set);
            if list.is_empty() {
                set.remove(&app);
            } else {
                set.insert(app, Arc::new(list));
            }
        });
    }
}
