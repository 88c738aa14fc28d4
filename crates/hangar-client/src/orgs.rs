//! Orgs: `/orgs`.

use hangar_types::org::{CreateOrgRequest, CreatedOrg, Org, Orgs};
use reqwest::Method;

use crate::{Client, Result};

impl Client {
    pub async fn create_org(&self, req: &CreateOrgRequest) -> Result<CreatedOrg> {
        self.call(Method::POST, "/orgs", Some(req), &[]).await
    }

    pub async fn orgs(&self) -> Result<Orgs> {
        self.call(Method::GET, "/orgs", Self::NONE, &[]).await
    }

    pub async fn org(&self, slug: &str) -> Result<Org> {
        self.call(Method::GET, &format!("/orgs/{slug}"), Self::NONE, &[])
            .await
    }

    pub async fn destroy_org(&self, slug: &str) -> Result<()> {
        self.call_raw(Method::DELETE, &format!("/orgs/{slug}"), Self::NONE, &[])
            .await
            .map(|_| ())
    }
}
