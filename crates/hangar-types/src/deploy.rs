//! Deploys and releases on the wire: what the CLI asks the server to deploy, the
//! progress it streams back, and releases as listed (flytoml-and-deploys.md §7, §10).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::GoDuration;

/// `POST /v1/apps/{app}/deploys`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// The app config (fly.toml read into JSON); for a restart-only deploy, none: the
    /// current release's is used.
    #[serde(default)]
    pub config: Option<Value>,
    /// The image to run; for a restart-only deploy, none: the current release's.
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub max_unavailable: Option<f64>,
    #[serde(default)]
    pub wait_timeout: Option<GoDuration>,
    #[serde(default)]
    pub release_command_timeout: Option<GoDuration>,
    /// A second machine for groups with services (default true).
    #[serde(default)]
    pub ha: Option<bool>,
    #[serde(default)]
    pub skip_release_command: bool,
    /// Overrides `primary_region`.
    #[serde(default)]
    pub primary_region: Option<String>,
    /// Added to `[env]`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Only restart machines on the current image and config (new secrets).
    #[serde(default)]
    pub restart_only: bool,
    #[serde(default)]
    pub description: Option<String>,
}

/// `POST /v1/apps/{app}/releases/{version}/rollback`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RollbackRequest {
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub wait_timeout: Option<GoDuration>,
}

/// A release as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub id: String,
    pub version: i64,
    pub status: ReleaseStatus,
    /// As Fly shows it: `ROLLING`, `IMMEDIATE`, `CANARY`, `BLUEGREEN`.
    pub strategy: String,
    pub description: String,
    pub user: String,
    pub image_ref: String,
    pub secrets_version: i64,
    pub stable: bool,
    pub in_progress: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseList {
    pub releases: Vec<Release>,
}

/// A release with the config it deployed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseDetail {
    #[serde(flatten)]
    pub release: Release,
    pub config: Value,
}

/// One line of a deploy's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployEvent {
    /// Counts up from 1 within a deploy; resume a stream with `?after=seq`.
    pub seq: u64,
    /// Unix milliseconds.
    pub at: i64,
    /// `step`, `machine`, `progress`, `log`, `warning`, `complete`, `failed`.
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Machines done and in all, for progress bars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u32>,
}

impl DeployEvent {
    /// Whether the deploy has ended with this event.
    pub fn is_final(&self) -> bool {
        self.kind == "complete" || self.kind == "failed"
    }
}

/// Where a release's deploy stands. `complete` is the only status whose release the app
/// runs; `pending` and `running` are in progress (and, found at start, were cut short:
/// they become `interrupted` once the machines are put back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseStatus {
    Pending,
    Running,
    Complete,
    Failed,
    Interrupted,
}

impl ReleaseStatus {
    pub const ALL: [ReleaseStatus; 5] = [
        Self::Pending,
        Self::Running,
        Self::Complete,
        Self::Failed,
        Self::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the deploy has yet to end.
    pub fn in_progress(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }
}

impl std::fmt::Display for ReleaseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a deploy moves machines to the new release (fly.toml `[deploy] strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployStrategy {
    Rolling,
    Immediate,
    Canary,
    Bluegreen,
}

impl DeployStrategy {
    pub const ALL: [DeployStrategy; 4] = [
        Self::Canary,
        Self::Rolling,
        Self::Immediate,
        Self::Bluegreen,
    ];

    /// The strategy a name gives, in any case; the error lists the ones there are.
    pub fn parse(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unsupported deployment strategy '{lower}'; use one of: {}",
                    names.join(", ")
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rolling => "rolling",
            Self::Immediate => "immediate",
            Self::Canary => "canary",
            Self::Bluegreen => "bluegreen",
        }
    }
}

impl std::fmt::Display for DeployStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod strategy_tests {
    use super::{DeployStrategy, ReleaseStatus};

    #[test]
    fn release_statuses_round_trip_as_stored_and_on_the_wire() {
        for s in ReleaseStatus::ALL {
            assert_eq!(ReleaseStatus::parse(s.as_str()), Some(s));
            let wire = serde_json::to_string(&s).unwrap();
            assert_eq!(wire, format!("\"{s}\""));
        }
        assert_eq!(ReleaseStatus::parse("done"), None);
    }

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_choices() {
        for k in DeployStrategy::ALL {
            assert_eq!(DeployStrategy::parse(k.as_str()), Ok(k));
        }
        assert_eq!(
            DeployStrategy::parse("Rolling"),
            Ok(DeployStrategy::Rolling)
        );
        let err = DeployStrategy::parse("blue-green").unwrap_err();
        assert!(
            err.contains("canary, rolling, immediate, bluegreen"),
            "{err}"
        );
    }
}
