//! `MachineConfig`, the user's description of a machine (machines-api.md §8).
//!
//! Fields the platform acts on are typed, so bad values are refused with a message that
//! names them; fields it only stores are kept as JSON and echoed back unchanged. Unknown
//! fields are ignored, as Fly ignores them. `null` is accepted for every optional field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::duration::GoDuration;
use crate::signal::Signal;

type Extra = Option<Value>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineConfig {
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "crate::omit::map")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "null_default")]
    pub init: MachineInit,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<MachineGuest>,
    #[serde(default, skip_serializing_if = "crate::omit::vec")]
    pub services: Option<Vec<MachineService>>,
    #[serde(default, skip_serializing_if = "crate::omit::map")]
    pub checks: Option<BTreeMap<String, MachineCheck>>,
    #[serde(default, skip_serializing_if = "crate::omit::map")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<MachineRestart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_destroy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "crate::omit::vec")]
    pub processes: Option<Vec<MachineProcess>>,
    #[serde(default, skip_serializing_if = "crate::omit::vec")]
    pub files: Option<Vec<MachineFile>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_config: Option<StopConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    #[serde(default, skip_serializing_if = "crate::omit::vec")]
    pub standbys: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_machine_autostart: Option<bool>,
    /// The volume mounted in the machine (at most one).
    #[serde(default, skip_serializing_if = "crate::omit::vec")]
    pub mounts: Option<Vec<crate::volume::MachineMount>>,
    // Stored and echoed; acted on by later parts of the platform.
    #[serde(default, skip_serializing_if = "crate::omit::value")]
    pub statics: Extra,
    #[serde(default, skip_serializing_if = "crate::omit::value")]
    pub dns: Extra,
    #[serde(default, skip_serializing_if = "crate::omit::value")]
    pub metrics: Extra,
    #[serde(default, skip_serializing_if = "crate::omit::value")]
    pub rootfs: Extra,
    #[serde(default, skip_serializing_if = "crate::omit::value")]
    pub cache_drive: Extra,
    #[serde(default, skip_serializing_if = "crate::omit::value")]
    pub spot: Extra,
    #[serde(default, skip_serializing_if = "crate::omit::value")]
    pub containers: Extra,
    #[serde(default, skip_serializing_if = "crate::omit::value")]
    pub volumes: Extra,
}

/// Deserializes `null` as the type's default instead of failing.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An empty `exec`, `entrypoint` or `cmd` is kept (unlike other empty lists): `[]`
/// says "none of the image's", which absence does not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineInit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_size_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "crate::omit::vec")]
    pub kernel_args: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineGuest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_dedication_id: Option<String>,
    #[serde(default, skip_serializing_if = "crate::omit::vec")]
    pub kernel_args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "crate::omit::value")]
    pub persist_rootfs: Extra,
}

/// Restart policy (machines-api.md §7.5).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineRestart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

/// The restart policy a machine follows once its config is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    Always,
    OnFailure { max_retries: u32 },
}

/// Fly's default number of restarts for `on-failure` within the 5-minute window.
pub const DEFAULT_MAX_RETRIES: u32 = 10;

impl MachineRestart {
    /// Reads the policy; an empty or absent policy means `on-failure`, as on Fly.
    pub fn policy(&self) -> Result<RestartPolicy, String> {
        let max_retries = self.max_retries.unwrap_or(DEFAULT_MAX_RETRIES);
        match self.policy.as_deref().unwrap_or("") {
            "" | "on-failure" | "on-fail" => Ok(RestartPolicy::OnFailure { max_retries }),
            "always" => Ok(RestartPolicy::Always),
            "no" | "never" => Ok(RestartPolicy::No),
            other => Err(format!(
                "invalid restart policy {other:?}: use \"no\", \"always\" or \"on-failure\""
            )),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StopConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineProcess {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "crate::omit::map")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "crate::omit::value")]
    pub env_from: Extra,
    #[serde(default, skip_serializing_if = "crate::omit::value")]
    pub secrets: Extra,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_app_secrets: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineFile {
    #[serde(default)]
    pub guest_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineService {
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub internal_port: u16,
    #[serde(default, skip_serializing_if = "crate::omit::vec")]
    pub ports: Option<Vec<MachinePort>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostop: Option<Autostop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_machines_running: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ServiceConcurrency>,
    #[serde(default, skip_serializing_if = "crate::omit::vec")]
    pub checks: Option<Vec<MachineCheck>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_instance_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_instance_description: Option<String>,
}

/// `autostop`: accepted as a bool (`false` = off, `true` = stop) or a string; emitted as
/// a bool for off/stop and as `"suspend"` for suspend, as Fly does for old clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autostop {
    Off,
    Stop,
    Suspend,
}

impl Serialize for Autostop {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Off => s.serialize_bool(false),
            Self::Stop => s.serialize_bool(true),
            Self::Suspend => s.serialize_str("suspend"),
        }
    }
}

impl<'de> Deserialize<'de> for Autostop {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(false) => Ok(Self::Off),
            Value::Bool(true) => Ok(Self::Stop),
            Value::String(s) => match s.as_str() {
                "off" | "false" => Ok(Self::Off),
                "stop" | "true" => Ok(Self::Stop),
                "suspend" => Ok(Self::Suspend),
                _ => Err(serde::de::Error::custom(format!(
                    "invalid autostop {s:?}: use \"off\", \"stop\" or \"suspend\""
                ))),
            },
            _ => Err(serde::de::Error::custom(
                "invalid autostop: use \"off\", \"stop\", \"suspend\" or a boolean",
            )),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachinePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
    #[serde(default, skip_serializing_if = "crate::omit::vec")]
    pub handlers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_https: Option<bool>,
    #[serde(default, skip_serializing_if = "crate::omit::value")]
    pub tls_options: Extra,
    #[serde(default, skip_serializing_if = "crate::omit::value")]
    pub http_options: Extra,
    #[serde(default, skip_serializing_if = "crate::omit::value")]
    pub proxy_proto_options: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceConcurrency {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_limit: Option<u32>,
}

/// A health check, top-level (`checks`) or per service (`services[].checks`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineCheck {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub check_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_skip_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(default, skip_serializing_if = "crate::omit::value")]
    pub headers: Extra,
    /// Top-level checks only: `informational` (default) or `readiness`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Largest stop timeout Fly allows.
pub const MAX_STOP_TIMEOUT_SECS: u64 = 300;

/// Memory a machine gets when `guest.memory_mb` is unset, as on Fly.
pub const DEFAULT_MEMORY_MB: u32 = 256;

impl MachineConfig {
    /// The memory the machine is given (and placement reserves for it), in MB.
    pub fn memory_mb(&self) -> u32 {
        self.guest
            .as_ref()
            .and_then(|g| g.memory_mb)
            .unwrap_or(DEFAULT_MEMORY_MB)
    }

    /// Checks what serde cannot: required fields and values that must be within range.
    /// The message names the field and says what is expected.
    pub fn validate(&self) -> Result<(), String> {
        if self.image.trim().is_empty() {
            return Err(
                "config.image is required: name the image to run, e.g. \"nginx:latest\"".into(),
            );
        }
        if let Some(restart) = &self.restart {
            restart
                .policy()
                .map_err(|e| format!("config.restart: {e}"))?;
        }
        if let Some(guest) = &self.guest {
            if let Some(cpus) = guest.cpus {
                if cpus == 0 || cpus > 128 {
                    return Err(format!(
                        "config.guest.cpus must be between 1 and 128, got {cpus}"
                    ));
                }
            }
            if let Some(mem) = guest.memory_mb {
                if !(128..=1_048_576).contains(&mem) {
                    return Err(format!(
                        "config.guest.memory_mb must be at least 128 (and at most 1048576), got {mem}"
                    ));
                }
            }
            if let Some(kind) = guest.cpu_kind.as_deref() {
                if !kind.is_empty() && kind != "shared" && kind != "performance" {
                    return Err(format!(
                        "config.guest.cpu_kind must be \"shared\" or \"performance\", got {kind:?}"
                    ));
                }
            }
        }
        if let Some(stop) = &self.stop_config {
            if let Some(t) = stop.timeout {
                if t.0.as_secs() > MAX_STOP_TIMEOUT_SECS {
                    return Err(format!(
                        "config.stop_config.timeout must be at most 5m0s, got {t}"
                    ));
                }
            }
        }
        if let Some(files) = &self.files {
            for f in files {
                if !f.guest_path.starts_with('/') {
                    return Err(format!(
                        "config.files: guest_path must be an absolute path, got {:?}",
                        f.guest_path
                    ));
                }
            }
        }
        crate::volume::check_mounts(self.mounts.as_deref().unwrap_or_default())?;
        if let Some(schedule) = self.schedule.as_deref() {
            if !schedule.is_empty() && !["hourly", "daily", "weekly", "monthly"].contains(&schedule)
            {
                return Err(format!(
                    "config.schedule must be hourly, daily, weekly or monthly, got {schedule:?}"
                ));
            }
        }
        Ok(())
    }

    /// The restart policy in force, Fly's default (`on-failure`, 10 retries) when unset.
    pub fn restart_policy(&self) -> RestartPolicy {
        self.restart
            .as_ref()
            .and_then(|r| r.policy().ok())
            .unwrap_or(RestartPolicy::OnFailure {
                max_retries: DEFAULT_MAX_RETRIES,
            })
    }

    /// The process group this machine belongs to (`fly_process_group`, default `app`).
    pub fn process_group(&self) -> &str {
        self.metadata
            .as_ref()
            .and_then(|m| {
                m.get("fly_process_group")
                    .or_else(|| m.get("process_group"))
            })
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("app")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_nulls_and_unknown_fields() {
        let c: MachineConfig = serde_json::from_value(serde_json::json!({
            "image": "nginx", "init": null, "env": null, "brand_new_field": 1,
            "services": [{"protocol": "tcp", "internal_port": 8080, "autostop": "suspend",
                          "force_instance_key": null,
                          "checks": [{"type": "http", "interval": "15s", "timeout": 2000000000}]}],
            "stop_config": {"signal": "SIGTERM", "timeout": "10s"}
        }))
        .unwrap();
        c.validate().unwrap();
        let out = serde_json::to_value(&c).unwrap();
        assert_eq!(out["init"], serde_json::json!({}));
        assert_eq!(out["services"][0]["autostop"], "suspend");
        assert_eq!(out["services"][0]["checks"][0]["timeout"], "2s");
        assert!(out.get("brand_new_field").is_none());
    }

    #[test]
    fn validation_names_the_field() {
        let c = MachineConfig {
            image: "x".into(),
            guest: Some(MachineGuest {
                memory_mb: Some(64),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("memory_mb"));
        assert!(MachineConfig::default()
            .validate()
            .unwrap_err()
            .contains("config.image"));
    }

    #[test]
    fn restart_defaults_to_on_failure() {
        assert_eq!(
            MachineConfig::default().restart_policy(),
            RestartPolicy::OnFailure { max_retries: 10 }
        );
    }
}
