//! Fly's machine states (machines-api.md §7.1) and which of them are persistent.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Every state a machine can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    Creating,
    Created,
    Starting,
    Started,
    Stopping,
    Stopped,
    Suspending,
    Suspended,
    Restarting,
    Updating,
    Replacing,
    Destroying,
    Destroyed,
    Failed,
    Replaced,
}

impl MachineState {
    pub const ALL: [MachineState; 15] = [
        Self::Creating,
        Self::Created,
        Self::Starting,
        Self::Started,
        Self::Stopping,
        Self::Stopped,
        Self::Suspending,
        Self::Suspended,
        Self::Restarting,
        Self::Updating,
        Self::Replacing,
        Self::Destroying,
        Self::Destroyed,
        Self::Failed,
        Self::Replaced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Created => "created",
            Self::Starting => "starting",
            Self::Started => "started",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Suspending => "suspending",
            Self::Suspended => "suspended",
            Self::Restarting => "restarting",
            Self::Updating => "updating",
            Self::Replacing => "replacing",
            Self::Destroying => "destroying",
            Self::Destroyed => "destroyed",
            Self::Failed => "failed",
            Self::Replaced => "replaced",
        }
    }

    /// The states a live machine rests in between operations: the settled ones but
    /// `destroyed`. Deploys wait for one of these before they touch a machine.
    pub const RESTING: [MachineState; 5] = [
        Self::Started,
        Self::Stopped,
        Self::Created,
        Self::Suspended,
        Self::Failed,
    ];

    /// A persistent state is one a machine rests in until something acts on it; `wait
    /// ?state=settled` returns on any of these.
    pub fn is_settled(self) -> bool {
        self == Self::Destroyed || Self::RESTING.contains(&self)
    }
}

impl fmt::Display for MachineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MachineState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown machine state {s:?}"))
    }
}
