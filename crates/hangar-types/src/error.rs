//! The error body every failing Machines API call answers with: `{"error": "..."}`,
//! optionally with Fly's `status` code word (`name_taken`, `insufficient_capacity`, ...).

use serde::{Deserialize, Serialize};

/// Fly's error body. Clients read `error`; some also read `message` when present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            status: None,
        }
    }
}
