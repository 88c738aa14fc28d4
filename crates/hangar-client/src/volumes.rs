//! Volumes: `/apps/{app}/volumes…`.

use hangar_types::volume::{
    CreateVolumeRequest, ExtendVolumeRequest, ExtendVolumeResponse, UpdateVolumeRequest, Volume,
    VolumeSnapshot,
};
use reqwest::Method;

use crate::{Client, Result};

impl Client {
    /// The app's volumes; destroyed ones (kept a day) too with `all`.
    pub async fn list_volumes(&self, app: &str, all: bool) -> Result<Vec<Volume>> {
        let query = if all { "?include_deleted=true" } else { "" };
        self.call(
            Method::GET,
            &format!("/apps/{app}/volumes{query}"),
            Self::NONE,
            &[],
        )
        .await
    }

    pub async fn create_volume(&self, app: &str, req: &CreateVolumeRequest) -> Result<Volume> {
        self.call(
            Method::POST,
            &format!("/apps/{app}/volumes"),
            Some(req),
            &[],
        )
        .await
    }

    pub async fn get_volume(&self, app: &str, id: &str) -> Result<Volume> {
        self.call(
            Method::GET,
            &format!("/apps/{app}/volumes/{id}"),
            Self::NONE,
            &[],
        )
        .await
    }

    pub async fn update_volume(
        &self,
        app: &str,
        id: &str,
        req: &UpdateVolumeRequest,
    ) -> Result<Volume> {
        self.call(
            Method::PUT,
            &format!("/apps/{app}/volumes/{id}"),
            Some(req),
            &[],
        )
        .await
    }

    pub async fn extend_volume(
        &self,
        app: &str,
        id: &str,
        size_gb: i64,
    ) -> Result<ExtendVolumeResponse> {
        let req = ExtendVolumeRequest {
            size_gb: Some(size_gb),
        };
        self.call(
            Method::PUT,
            &format!("/apps/{app}/volumes/{id}/extend"),
            Some(&req),
            &[],
        )
        .await
    }

    pub async fn destroy_volume(&self, app: &str, id: &str) -> Result<Volume> {
        self.call(
            Method::DELETE,
            &format!("/apps/{app}/volumes/{id}"),
            Self::NONE,
            &[],
        )
        .await
    }

    pub async fn list_snapshots(&self, app: &str, volume: &str) -> Result<Vec<VolumeSnapshot>> {
        self.call(
            Method::GET,
            &format!("/apps/{app}/volumes/{volume}/snapshots"),
            Self::NONE,
            &[],
        )
        .await
    }

    pub async fn create_snapshot(&self, app: &str, volume: &str) -> Result<VolumeSnapshot> {
        self.call(
            Method::POST,
            &format!("/apps/{app}/volumes/{volume}/snapshots"),
            Self::NONE,
            &[],
        )
        .await
    }
}
