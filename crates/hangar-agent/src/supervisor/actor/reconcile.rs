//! Reconciliation after a server start: the stored state of a machine is brought in
//! line with what the driver reports, adopting a process that still runs.

use hangar_runtime::Adopted;
use hangar_types::EventKind;
use hangar_types::MachineState;
use tracing::{info, warn};

use super::{lost_exit, MachineActor, Proc};

impl MachineActor {
    /// Whether the machine's latest update was to leave it running: it was started and
    /// not told to stay stopped.
    async fn update_meant_to_start(&self) -> bool {
        let events = self
            .ctx
            .ledger
            .events(&self.m.id, 10)
            .await
            .unwrap_or_default();
        events
            .iter()
            .find(|e| e.kind == EventKind::Update)
            .and_then(|e| e.request.as_ref())
            .is_some_and(|r| r["previous_state"] == "started" && r["skip_launch"] != true)
    }

    /// Brings the stored state in line with what the driver reports. Returns true when
    /// the machine ended up destroyed.
    pub(super) async fn reconcile(&mut self) -> bool {
        use MachineState as S;
        let state = self.m.state;
        let adopted = match self.m.runtime.clone() {
            Some(handle) => match self.ctx.driver.adopt(&handle).await {
                Ok(Adopted::Running(exited)) => {
                    self.running = Some(Proc { handle, exited });
                    None
                }
                Ok(Adopted::Exited(status)) => Some(status),
                Err(e) => {
                    warn!(machine = %self.m.id, error = %e, "cannot adopt machine; treating it as exited");
                    Some(lost_exit())
                }
            },
            None => None,
        };
        let alive = self.running.is_some();
        info!(machine = %self.m.id, app = %self.m.app_name, state = %state, alive, "reconciling machine");
        let r = match (state, alive, adopted) {
            (S::Destroying, _, _) => return self.destroy_now().await.is_ok(),
            (S::Started, true, _) | (S::Suspended, true, _) => Ok(()),
            (S::Starting | S::Restarting, true, _) => {
                self.transition(S::Started, EventKind::Start, "flyd", None, None)
                    .await
            }
            (S::Suspending, true, _) => match self.running.as_ref().map(|p| p.handle.clone()) {
                Some(h) => {
                    let _ = self.ctx.driver.suspend(&h).await;
                    self.transition(S::Suspended, EventKind::Suspend, "flyd", None, None)
                        .await
                }
                None => Ok(()),
            },
            (S::Replacing, true, _) => {
                let (sig, t) = Self::stop_defaults(&self.m.config, None, None);
                self.stop_process(sig, t).await;
                self.start_new("flyd").await;
                Ok(())
            }
            (_, true, _) => {
                // Alive although it should not run (stopping, stopped, created, failed).
                let (sig, t) = Self::stop_defaults(&self.m.config, None, None);
                let status = self.stop_process(sig, t).await;
                self.record_requested_exit(status).await
            }
            (S::Replacing, false, status) => {
                // An update cut short: finish it as it meant to end.
                if self.update_meant_to_start().await {
                    self.start_new("flyd").await;
                    Ok(())
                } else {
                    self.record_requested_exit(status).await
                }
            }
            (S::Stopping, false, status) => self.record_requested_exit(status).await,
            // A start the server did not finish: the handle it holds, if any, is the
            // previous run's, which has ended. Start it now.
            (S::Starting | S::Restarting, false, _) => {
                self.finish_start().await;
                Ok(())
            }
            (S::Started | S::Suspended | S::Suspending, false, Some(status)) => {
                return self.on_exit(status).await;
            }
            (S::Started | S::Suspended | S::Suspending, false, None) => {
                return self.on_exit(lost_exit()).await;
            }
            _ => Ok(()),
        };
        self.log_err("reconcile", r);
        // An adopted, started machine records no transition: start its checks here.
        if self.checks.is_none() {
            self.sync_checks();
        }
        false
    }
}
