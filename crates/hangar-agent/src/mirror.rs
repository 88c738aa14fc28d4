//! The agent's observed state flowing back: one task sends the ledger's outbox to the
//! control plane in the order it was recorded, and forgets each change once the control
//! plane has it. While the control plane cannot be reached the changes wait in the
//! ledger (on disk), machines go on changing, and the task tries again every second;
//! nothing is lost and, since the control plane applies each event once, nothing lands
//! twice.
//!
//! It does not decide what changes: the actors do, through the ledger.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hangar_types::observed::MachineChange;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::ledger::Ledger;

/// Why the control plane did not take changes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ObserveError {
    /// It cannot be reached now; the same changes are sent again later.
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    /// It refused them; they are tried one by one and a refused one is dropped.
    #[error("control plane refused machine changes: {0}")]
    Refused(String),
}

/// Where observed changes go: the control plane's copy of machines.
#[async_trait::async_trait]
pub trait ControlPlane: Send + Sync {
    async fn observe(&self, changes: &[MachineChange]) -> Result<(), ObserveError>;
}

/// How often changes are tried again while the control plane is away.
const RETRY: Duration = Duration::from_secs(1);
/// Changes sent in one request.
const BATCH: usize = 256;
/// The longest an actor waits for the control plane to have its change before it goes
/// on: a reply then reflects the control plane's copy, unless it is away.
const SETTLE_WAIT: Duration = Duration::from_secs(2);

/// The sending side, shared by the actors. Cheap to clone.
#[derive(Clone)]
pub struct Mirror {
    inner: Arc<Inner>,
}

struct Inner {
    ledger: Ledger,
    control: Arc<dyn ControlPlane>,
    wake: Notify,
    /// The last outbox place the control plane has.
    acked: watch::Sender<i64>,
    /// Whether the last attempt failed.
    away: AtomicBool,
}

impl Mirror {
    pub fn new(ledger: Ledger, control: Arc<dyn ControlPlane>) -> Mirror {
        Mirror {
            inner: Arc::new(Inner {
                ledger,
                control,
                wake: Notify::new(),
                acked: watch::channel(0).0,
                away: AtomicBool::new(false),
            }),
        }
    }

    /// Waits (briefly) until the control plane has the change at `seq`, so what the
    /// Machines API shows after a command includes it; returns at once while the
    /// control plane is away.
    pub async fn settle(&self, seq: i64) {
        self.inner.wake.notify_one();
        if self.inner.away.load(Ordering::Relaxed) {
            return;
        }
        let mut acked = self.inner.acked.subscribe();
        let away = &self.inner.away;
        let _ = tokio::time::timeout(SETTLE_WAIT, async {
            while *acked.borrow_and_update() < seq && !away.load(Ordering::Relaxed) {
                if acked.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// Sends everything waiting, once; false when the control plane is away. For start
    /// up, so the control plane's copy is current before the API serves it.
    pub async fn flush(&self) -> bool {
        loop {
            match self.send_batch().await {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(()) => return false,
            }
        }
    }

    /// Sends until cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            let wait = match self.send_batch().await {
                Ok(0) => None,
                Ok(_) => continue,
                Err(()) => Some(RETRY),
            };
            let idle = async {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => self.inner.wake.notified().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = idle => {}
            }
        }
    }

    /// Sends one batch; how many changes went, or `Err` when the control plane is away.
    async fn send_batch(&self) -> Result<usize, ()> {
        let inner = &self.inner;
        let batch = match inner.ledger.unsent(BATCH).await {
            Ok(b) => b,
            Err(e) => {
                error!(error = %e, "read the agent's outbox");
                return Err(());
            }
        };
        let Some(&(last, _)) = batch.last() else {
            return Ok(0);
        };
        let changes: Vec<MachineChange> = batch.iter().map(|(_, c)| c.clone()).collect();
        match inner.control.observe(&changes).await {
            Ok(()) => {}
            Err(ObserveError::Unavailable(e)) => {
                if !inner.away.swap(true, Ordering::Relaxed) {
                    warn!(error = %e, waiting = changes.len(), "control plane away; machine changes wait in the agent's store");
                }
                // Actors waiting for this change stop waiting: it is away.
                inner.acked.send_modify(|_| {});
                return Err(());
            }
            Err(ObserveError::Refused(e)) => {
                warn!(error = %e, "control plane refused a batch of machine changes; sending them one by one");
                for change in &changes {
                    match inner.control.observe(std::slice::from_ref(change)).await {
                        Ok(()) => {}
                        Err(ObserveError::Refused(e)) => {
                            error!(machine = %change.machine_id(), error = %e, "control plane refused a machine change; dropped")
                        }
                        Err(ObserveError::Unavailable(_)) => return Err(()),
                    }
                }
            }
        }
        if let Err(e) = inner.ledger.acknowledge(last).await {
            error!(error = %e, "forget sent machine changes");
            return Err(());
        }
        if inner.away.swap(false, Ordering::Relaxed) {
            info!("control plane back; machine changes sent");
        }
        inner.acked.send_replace(last);
        Ok(changes.len())
    }
}
