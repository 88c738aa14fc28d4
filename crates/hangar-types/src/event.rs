//! The words of a machine's life that more than one crate speaks: what a machine event
//! records ([`EventKind`], the `type` of Fly's event objects) and how a health check
//! stands ([`CheckState`]). Each is defined here once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a machine event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The machine was created.
    Launch,
    Start,
    Stop,
    /// The main process ended (asked to or not); `request.exit_event` says how.
    Exit,
    /// A new config version replaced the old one.
    Update,
    Restart,
    Suspend,
    Destroy,
    /// The control plane grew the machine's volume (its use passed the mount's
    /// `extend_threshold_percent`); `request` says from and to what size.
    VolumeExtend,
    /// Someone opened a console session (`hangar ssh console`); `request` says who,
    /// which command and whether it had a terminal.
    Ssh,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::Launch,
        EventKind::Start,
        EventKind::Stop,
        EventKind::Exit,
        EventKind::Update,
        EventKind::Restart,
        EventKind::Suspend,
        EventKind::Destroy,
        EventKind::VolumeExtend,
        EventKind::Ssh,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Launch => "launch",
            EventKind::Start => "start",
            EventKind::Stop => "stop",
            EventKind::Exit => "exit",
            EventKind::Update => "update",
            EventKind::Restart => "restart",
            EventKind::Suspend => "suspend",
            EventKind::Destroy => "destroy",
            EventKind::VolumeExtend => "volume_extend",
            EventKind::Ssh => "ssh",
        }
    }
}

impl FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown machine event type {s:?}"))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a health check stands, in Fly's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    Passing,
    Warning,
    Critical,
}

impl CheckState {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Passing => "passing",
            CheckState::Warning => "warning",
            CheckState::Critical => "critical",
        }
    }
}

impl fmt::Display for CheckState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_back_as_written() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(k));
            assert_eq!(
                serde_json::to_value(k).expect("encode"),
                serde_json::json!(k.as_str())
            );
        }
        assert!("reboot".parse::<EventKind>().is_err());
        assert_eq!(
            serde_json::to_value(CheckState::Critical).expect("encode"),
            serde_json::json!("critical")
        );
    }
}
