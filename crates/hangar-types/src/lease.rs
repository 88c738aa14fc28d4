//! Machine leases: the bare `Lease` object and the `{status, data}` envelope that real
//! clients read (machines-api.md §6.9).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Unix seconds.
    pub expires_at: i64,
    pub owner: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub version: String,
}

/// `{"status":"success","data":{...}}`, or `{"status":"error","message":...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseEnvelope {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Lease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}
