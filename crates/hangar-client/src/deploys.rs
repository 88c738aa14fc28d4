//! Secrets, deploys and releases: `/apps/{app}/secrets`, `/apps/{app}/deploys`,
//! `/apps/{app}/releases` and a deploy's progress stream.

use std::collections::BTreeMap;

use hangar_types::deploy::{
    DeployEvent, DeployRequest, Release, ReleaseDetail, ReleaseList, RollbackRequest,
};
use hangar_types::secrets::{AppSecrets, SecretsUpdate, SecretsUpdated};
use reqwest::Method;

use crate::{Client, Result};

impl Client {
    pub async fn list_secrets(&self, app: &str) -> Result<AppSecrets> {
        self.call(
            Method::GET,
            &format!("/apps/{app}/secrets"),
            Self::NONE,
            &[],
        )
        .await
    }

    /// Sets (`Some`) and unsets (`None`) secrets in one change.
    pub async fn update_secrets(
        &self,
        app: &str,
        values: BTreeMap<String, Option<String>>,
    ) -> Result<SecretsUpdated> {
        self.call(
            Method::POST,
            &format!("/apps/{app}/secrets"),
            Some(&SecretsUpdate { values }),
            &[],
        )
        .await
    }

    /// Starts a deploy on the server; follow it with [`Client::follow_deploy`].
    pub async fn deploy(&self, app: &str, req: &DeployRequest) -> Result<Release> {
        self.call(
            Method::POST,
            &format!("/apps/{app}/deploys"),
            Some(req),
            &[],
        )
        .await
    }

    pub async fn releases(&self, app: &str, limit: usize) -> Result<ReleaseList> {
        self.call(
            Method::GET,
            &format!("/apps/{app}/releases?limit={limit}"),
            Self::NONE,
            &[],
        )
        .await
    }

    /// A release by version, id, or `current`, with its config.
    pub async fn release(&self, app: &str, which: &str) -> Result<ReleaseDetail> {
        self.call(
            Method::GET,
            &format!("/apps/{app}/releases/{which}"),
            Self::NONE,
            &[],
        )
        .await
    }

    pub async fn rollback(&self, app: &str, which: &str, req: &RollbackRequest) -> Result<Release> {
        self.call(
            Method::POST,
            &format!("/apps/{app}/releases/{which}/rollback"),
            Some(req),
            &[],
        )
        .await
    }

    /// Calls `on_event` for each progress event of the deploy of `release_id` until it
    /// ends; a dropped connection is resumed where it stopped. Returns the final event.
    pub async fn follow_deploy(
        &self,
        app: &str,
        release_id: &str,
        mut on_event: impl FnMut(&DeployEvent),
    ) -> Result<DeployEvent> {
        let mut after = 0;
        let mut attempts = 0;
        loop {
            let mut last = None;
            let r = self
                .stream_ndjson(
                    &format!("/apps/{app}/releases/{release_id}/progress?after={after}"),
                    |e: DeployEvent| {
                        after = after.max(e.seq);
                        on_event(&e);
                        if e.is_final() {
                            last = Some(e);
                        }
                    },
                )
                .await;
            if let Some(e) = last {
                return Ok(e);
            }
            attempts += 1;
            if attempts > 30 {
                r?;
                return Err(crate::ClientError::Decode(format!(
                    "the progress of release {release_id} stopped before the deploy ended; `hangar releases -a {app}` shows its outcome"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

impl Client {
    /// Sends a build context (tar.gz) to be built on the server and pushed to its
    /// registry, calling `on_event` for each line of output; the image on success.
    pub async fn build(
        &self,
        app: &str,
        context: Vec<u8>,
        query: &[(&str, String)],
        mut on_event: impl FnMut(&hangar_types::build::BuildEvent),
    ) -> Result<String> {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in query {
            q.append_pair(k, v);
        }
        let url = format!("{}/v1/apps/{app}/builds?{}", self.base, q.finish());
        let req = self
            .http
            .post(&url)
            .header("content-type", "application/gzip")
            .body(context);
        let mut outcome: Option<hangar_types::build::BuildEvent> = None;
        self.send_ndjson(req, |e: hangar_types::build::BuildEvent| {
            on_event(&e);
            if e.kind != "log" {
                outcome = Some(e);
            }
        })
        .await?;
        match outcome {
            Some(e) if e.kind == "done" => e
                .image
                .ok_or_else(|| crate::ClientError::Decode("the build named no image".into())),
            Some(e) => Err(crate::ClientError::Api {
                status: reqwest::StatusCode::UNPROCESSABLE_ENTITY,
                message: e.message,
            }),
            None => Err(crate::ClientError::Decode(
                "the build ended without saying how; see the server's log".into(),
            )),
        }
    }
}
