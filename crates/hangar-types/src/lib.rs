//! Wire types of the Hangar API, shaped exactly as the Fly Machines API shapes them.
//!
//! This crate owns the JSON field names, the value encodings Fly mixes (Go duration
//! strings, Unix-millisecond event timestamps, signals as names or numbers) and the
//! parsing rules real Fly clients rely on. It does no I/O and knows nothing of storage,
//! drivers or HTTP routing; the server and the client both build on it.

pub mod app;
pub mod billing;
pub mod build;
pub mod console;
pub mod deploy;
pub mod duration;
pub mod edge;
pub mod error;
pub mod event;
pub mod lease;
pub mod logs;
pub mod machine;
pub mod machine_config;
pub mod observed;
pub mod omit;
pub mod org;
pub mod requests;
pub mod secrets;
pub mod signal;
pub mod state;
pub mod volume;
pub mod wireguard;

pub use app::{App, CreateAppRequest, CreateAppResponse, ListApp, ListAppsResponse, Organization};
pub use deploy::DeployStrategy;
pub use duration::GoDuration;
pub use error::ErrorBody;
pub use event::{CheckState, EventKind};
pub use lease::{Lease, LeaseEnvelope};
pub use logs::LogEntry;
pub use machine::{CheckStatus, ImageRef, Machine, MachineEvent, MachineVersion, ProcessStat};
pub use machine_config::MachineConfig;
pub use signal::Signal;
pub use state::MachineState;
