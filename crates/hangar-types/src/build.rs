//! Image builds on the wire: what a build streams back while it runs.

use serde::{Deserialize, Serialize};

/// One line of a build's output, or its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildEvent {
    /// `log`, `done` or `failed`.
    pub kind: String,
    pub message: String,
    /// With `done`: the pushed image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}
