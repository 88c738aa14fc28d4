//! The agent: what runs on every host and is the only authority over the machines on
//! it. It owns the machine supervisor (one actor per machine, the only writer of that
//! machine's state, over the runtime driver), reconciliation with the driver after a
//! crash, health checks, and the live set of instances the edge proxy routes from.
//!
//! It does not serve the Machines API, keep apps, releases or secrets, or decide where
//! a machine runs: that is the control plane (`hangar-server`), which drives the agent
//! through [`supervisor::Supervisor`] and gives it what it needs through two narrow
//! seams: a machine's secrets at start and exec ([`SecretSource`]), and hearing how
//! each machine looks as it changes ([`Observer`], which usage metering reads).

pub mod api;
pub mod clock;
pub mod console;
pub mod dns;
pub mod gateway;
pub mod host;
pub mod ids;
pub mod ledger;
pub mod mirror;
pub mod remote;
pub mod standalone;
pub mod supervisor;
pub mod traffic;
pub mod tunnel;
pub mod volumes;

use hangar_runtime::Secrets;
use hangar_store::MachineRecord;

/// Where a machine's secrets come from when it starts or a command runs in it.
#[async_trait::async_trait]
pub trait SecretSource: Send + Sync {
    /// The secrets `machine` runs with; the error says why they cannot be had (never
    /// a value).
    async fn for_machine(&self, machine: &MachineRecord) -> Result<Secrets, SecretsError>;
}

/// Why a machine's secrets cannot be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretsError {
    /// Not now (the control plane or its database is away): worth waiting for.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

/// Hears how a machine looks each time the agent publishes it (created, started,
/// stopped, destroyed, ...): the agent's observed state flowing back.
pub trait Observer: Send + Sync {
    fn machine(&self, machine: &MachineRecord);
}
