//! The control plane's side of what agents observe: their machine changes land in the
//! store's copy of machines, which the Machines API lists and shows. The agent's store
//! stays the truth for what runs on its host; this only keeps the copy and says whether
//! the store could take the changes now (unavailable: the agent keeps them and sends
//! again) or refused them.

use hangar_agent::mirror::{ControlPlane, ObserveError};
use hangar_store::Store;
use hangar_types::observed::MachineChange;

/// Applies agents' changes to the store.
pub struct MachineCopy(pub Store);

#[async_trait::async_trait]
impl ControlPlane for MachineCopy {
    async fn observe(&self, changes: &[MachineChange]) -> Result<(), ObserveError> {
        let changes = changes.to_vec();
        match self.0.call(move |db| db.apply_changes(&changes)).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_unavailable() => Err(ObserveError::Unavailable(e.to_string())),
            Err(e) => Err(ObserveError::Refused(e.to_string())),
        }
    }
}
