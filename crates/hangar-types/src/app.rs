//! Apps and organizations as the Machines API shows them (machines-api.md §5).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    pub name: String,
    pub slug: String,
}

/// `GET /v1/apps/{app}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub id: String,
    pub name: String,
    pub organization: Organization,
    pub status: String,
    #[serde(default)]
    pub machine_count: i64,
    #[serde(default)]
    pub network: String,
    /// Where the edge proxy serves the app (`<app>.<app-domain>`), as Fly's app
    /// `hostname`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The app's URL through the edge proxy, as Fly's `appUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_url: Option<String>,
}

/// One app in `GET /v1/apps`; `network` is the network's name, as Fly's servers send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListApp {
    pub id: String,
    pub name: String,
    pub machine_count: i64,
    pub network: String,
    #[serde(default)]
    pub organization: Option<Organization>,
    #[serde(default)]
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListAppsResponse {
    pub total_apps: i64,
    pub apps: Vec<ListApp>,
}

/// `POST /v1/apps`. Fly's docs name the field `app_name`, its current clients `name`;
/// both are accepted and `name` wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAppRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_role_id: Option<String>,
}

impl CreateAppRequest {
    pub fn app_name(&self) -> Option<&str> {
        self.name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(self.app_name.as_deref())
    }
}

/// The create answer: Fly's `{id, created_at(ms)}` plus the fields fly-go decodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAppResponse {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub organization: Organization,
    pub status: String,
}

/// Fly's rule for app names: lowercase letters, digits and dashes, under 63 characters,
/// starting with a letter or digit and not ending with a dash.
pub fn validate_app_name(name: &str) -> Result<(), String> {
    let ok = (2..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid app name {name:?}: use 2 to 63 lowercase letters, numbers and dashes, not starting or ending with a dash"
        ))
    }
}
