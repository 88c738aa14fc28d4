//! One line of an app's logs as `GET /v1/apps/{app}/logs` streams it (NDJSON).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// RFC 3339 with nanoseconds, UTC.
    pub timestamp: String,
    pub app: String,
    /// The machine ID.
    pub machine: String,
    pub region: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub message: String,
}
