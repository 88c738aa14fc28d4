//! The agent's interface carried over HTTP, for an agent in another process or on
//! another host: the agent serves it (`server.rs`) and the control plane calls it
//! (`client.rs`, an [`crate::api::AgentApi`] like the in-process supervisor). The other
//! direction — observed changes and secrets, from the agent to the control plane —
//! is `control.rs`. All of it is authenticated with one shared agent token.

pub mod client;
pub mod control;
pub mod server;

use hangar_runtime::logs::LogCursor;
use hangar_store::MachineRecord;
use serde::{Deserialize, Serialize};

/// Whether a request's `Authorization` header carries `token` as a bearer token, compared
/// in constant time.
pub fn bearer_matches(header: Option<&axum::http::HeaderValue>, token: &str) -> bool {
    let given = header
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Where the agent's routes live.
pub const PREFIX: &str = "/agent/v1";

/// The query parameter a console request carries its session in (as JSON: the body
/// of a request that is upgraded is not read).
const CONSOLE_SPEC_PARAM: &str = "session";

#[derive(Serialize, Deserialize)]
struct CreateBody {
    machine: MachineRecord,
    skip_launch: bool,
}

#[derive(Serialize, Deserialize)]
struct WaitQuery {
    /// The newest event id the caller has seen; without it, the answer is at once.
    after: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct LogQuery {
    /// A [`LogCursor`] as JSON; without it, the retained lines.
    cursor: Option<String>,
}

impl LogQuery {
    fn encode(cursor: Option<LogCursor>) -> LogQuery {
        LogQuery {
            cursor: cursor.and_then(|c| serde_json::to_string(&c).ok()),
        }
    }

    fn decode(&self) -> Result<Option<LogCursor>, String> {
        self.cursor
            .as_deref()
            .map(|c| serde_json::from_str(c).map_err(|e| format!("bad log cursor: {e}")))
            .transpose()
    }
}
