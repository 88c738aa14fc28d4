//! Request and small response bodies of the machine endpoints, accepting every shape
//! real Fly clients send (machines-api.md §15): integer or string TTLs, `cmd` or
//! `command` for exec, signal names or numbers, `"0s"` meaning "use the default".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::GoDuration;
use crate::machine_config::MachineConfig;
use crate::signal::Signal;

/// `POST /v1/apps/{app}/machines`, and with `current_version` the update body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateMachineRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<MachineConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_launch: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_service_registration: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_secrets: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_secrets_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsvd: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StopRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalRequest {
    pub signal: Signal,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    #[serde(default, skip_serializing_if = "crate::omit::vec")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
}

impl ExecRequest {
    /// The argv to run: `command` when given, else the legacy `cmd` string split the
    /// way a shell would.
    pub fn argv(&self) -> Result<Vec<String>, String> {
        if let Some(cmd) = self.command.as_ref().filter(|c| !c.is_empty()) {
            return Ok(cmd.clone());
        }
        match self.cmd.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
            Some(cmd) => {
                shell_split(cmd).ok_or_else(|| format!("invalid cmd {cmd:?}: unbalanced quotes"))
            }
            None => Err("command is required: give \"command\": [\"ls\", \"-l\"]".into()),
        }
    }
}

/// Splits a command line on whitespace, honouring single and double quotes and
/// backslash escapes; `None` when a quote is left open.
pub fn shell_split(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => cur.push(chars.next()?),
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                cur.push(chars.next()?);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return None;
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResponse {
    pub exit_code: i32,
    #[serde(default)]
    pub exit_signal: i32,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitResponse {
    pub ok: bool,
    pub state: String,
    pub version: String,
    pub event_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartResponse {
    pub previous_state: String,
    pub migrated: bool,
    pub new_host: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OkResponse {
    pub ok: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateLeaseRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataValue {
    #[serde(default)]
    pub value: String,
}

/// `PUT`/`PATCH …/metadata`: `null` or `""` values delete keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataUpdate {
    #[serde(default)]
    pub metadata: BTreeMap<String, Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_version: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_accepts_command_or_cmd() {
        let r: ExecRequest = serde_json::from_str(r#"{"cmd":"sh -c 'echo hi there'"}"#).unwrap();
        assert_eq!(r.argv().unwrap(), vec!["sh", "-c", "echo hi there"]);
        let r: ExecRequest = serde_json::from_str(r#"{"command":["ls","-l"]}"#).unwrap();
        assert_eq!(r.argv().unwrap(), vec!["ls", "-l"]);
        assert!(ExecRequest::default().argv().is_err());
        assert!(shell_split("echo 'open").is_none());
    }
}
