//! Orgs on the API (`/v1/orgs`): each has its own private network and its own tokens.

use serde::{Deserialize, Serialize};

/// `POST /v1/orgs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateOrgRequest {
    /// Shown to people; the slug is made from it unless given.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
}

/// An org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    pub slug: String,
    pub name: String,
    /// The number in its machines' private addresses (`fdaa:0:<n>::/48`).
    pub numeric_id: i64,
}

/// The answer to `POST /v1/orgs`: the org and its first token, shown only here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedOrg {
    #[serde(flatten)]
    pub org: Org,
    pub token: String,
}

/// `GET /v1/orgs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orgs {
    pub orgs: Vec<Org>,
}
