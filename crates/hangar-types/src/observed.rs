//! What an agent tells the control plane about the machines on its host: each change
//! the agent recorded in its own store, in the order it recorded them. The control plane
//! keeps a copy of machines from these (what the Machines API lists and shows); the
//! agent's store stays the truth for what runs on its host.
//!
//! Every change that carries an event is applied once: the event's id marks it as seen,
//! so the agent may send a change again after a lost answer.

use serde::{Deserialize, Serialize};

use crate::{MachineConfig, MachineEvent, MachineState};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MachineChange {
    /// A new state and the event recording it; `runtime` is `Some` when the driver's
    /// handle changed (`Some(None)` once nothing runs).
    Transition {
        machine_id: String,
        state: MachineState,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "present"
        )]
        runtime: Option<Option<String>>,
        event: MachineEvent,
        at: String,
    },
    /// A new config version replaced the machine's config.
    NewVersion {
        machine_id: String,
        version: String,
        config: Box<MachineConfig>,
        state: MachineState,
        event: MachineEvent,
        at: String,
    },
    /// The current version's config rewritten in place (metadata edits).
    ConfigInPlace {
        machine_id: String,
        config: Box<MachineConfig>,
        at: String,
    },
    /// The proxy stopped (or resumed) routing to the machine.
    Cordoned {
        machine_id: String,
        cordoned: bool,
        at: String,
    },
}

impl MachineChange {
    pub fn machine_id(&self) -> &str {
        match self {
            MachineChange::Transition { machine_id, .. }
            | MachineChange::NewVersion { machine_id, .. }
            | MachineChange::ConfigInPlace { machine_id, .. }
            | MachineChange::Cordoned { machine_id, .. } => machine_id,
        }
    }

    /// The event the change records, whose id makes applying it twice a no-op.
    pub fn event(&self) -> Option<&MachineEvent> {
        match self {
            MachineChange::Transition { event, .. } | MachineChange::NewVersion { event, .. } => {
                Some(event)
            }
            _ => None,
        }
    }
}

/// A field that is present is `Some`, even when it is `null`: absent means unchanged.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_keeps_whether_the_runtime_handle_changed() {
        let event = MachineEvent {
            id: "01J".into(),
            kind: crate::EventKind::Exit,
            status: "stopped".into(),
            source: "flyd".into(),
            timestamp: 1,
            request: None,
        };
        for runtime in [None, Some(None), Some(Some("h".to_string()))] {
            let c = MachineChange::Transition {
                machine_id: "m".into(),
                state: MachineState::Stopped,
                runtime: runtime.clone(),
                event: event.clone(),
                at: "t".into(),
            };
            let back: MachineChange =
                serde_json::from_str(&serde_json::to_string(&c).expect("encode")).expect("decode");
            assert_eq!(back, c, "runtime {runtime:?}");
        }
    }
}
