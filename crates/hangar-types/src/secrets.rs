//! App secrets on the wire (machines-api.md §10): names, digests and dates — values
//! only ever travel inward, in set requests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One secret as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSecret {
    pub name: String,
    pub digest: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSecrets {
    pub secrets: Vec<AppSecret>,
}

/// `POST /apps/{app}/secrets`: `null` unsets a name.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsUpdate {
    #[serde(default)]
    pub values: BTreeMap<String, Option<String>>,
}

impl std::fmt::Debug for SecretsUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

/// The answer to a change: the secrets now set and the new version (both spellings,
/// as Fly sends them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsUpdated {
    #[serde(default)]
    pub secrets: Vec<AppSecret>,
    pub version: i64,
    #[serde(rename = "Version", default)]
    pub version_deprecated: i64,
}

/// `POST /apps/{app}/secrets/{name}`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretValue {
    #[serde(default)]
    pub value: Option<String>,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(..)")
    }
}

/// The answer to setting one secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSet {
    #[serde(flatten)]
    pub secret: AppSecret,
    pub version: i64,
    #[serde(rename = "Version", default)]
    pub version_deprecated: i64,
}

/// The answer to deleting one secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretDeleted {
    pub version: i64,
    #[serde(rename = "Version", default)]
    pub version_deprecated: i64,
}
