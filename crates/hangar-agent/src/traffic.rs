//! The agent's side of the data path on its host: starting a stopped machine for the
//! proxy ([`ActorStarter`]) and stopping (or suspending) what autostop finds idle
//! ([`autostop`]), both through the machines' actors. The proxy itself is
//! `hangar-proxy`; it reads the agent's live instance set.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::supervisor::{MachineCmd, Supervisor};

/// The least time a started machine runs before autostop may stop it.
const MIN_RUN: Duration = Duration::from_secs(2);

/// Starts machines for the proxy through their actors.
pub struct ActorStarter(pub Supervisor);

#[async_trait::async_trait]
impl hangar_proxy::Starter for ActorStarter {
    async fn start(&self, _app: &str, machine_id: &str) -> Result<(), String> {
        self.0
            .send(machine_id, |reply| MachineCmd::Start { reply })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Every `interval`, stops (or suspends) what autostop finds idle, through the actors.
/// A machine gets at least one interval (and never less than a few seconds) after it
/// starts before autostop may take it: one woken for a request serves what follows it.
pub async fn autostop(
    supervisor: Supervisor,
    primary_region: String,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let instances = supervisor.instances();
    let load = supervisor.load();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let set = instances.borrow().clone();
        let min_age = interval.max(MIN_RUN);
        for d in hangar_proxy::autostop::pass(&set, &primary_region, |id| load.of(id), min_age) {
            tracing::info!(app = %d.app, machine = %d.machine_id, mode = ?d.mode, "autostop");
            let suspended = d.mode == hangar_proxy::AutostopMode::Suspend
                && supervisor
                    .send(&d.machine_id, |reply| MachineCmd::Suspend { reply })
                    .await
                    .is_ok();
            if !suspended {
                let _ = supervisor
                    .send(&d.machine_id, |reply| MachineCmd::Stop {
                        signal: None,
                        timeout: None,
                        reply,
                    })
                    .await;
            }
        }
    }
}

/// An observer that hears nothing: for an agent whose control plane meters usage
/// from elsewhere.
pub struct Unobserved;

impl crate::Observer for Unobserved {
    fn machine(&self, _machine: &hangar_store::MachineRecord) {}
}

/// [`Unobserved`], ready to hand to a supervisor.
pub fn unobserved() -> Arc<dyn crate::Observer> {
    Arc::new(Unobserved)
}
