//! Images: resolve a reference on its registry (multi-arch indexes to this host's
//! platform), fetch the manifest, config and layers with an OCI registry client, write
//! them into containerd's content store, and unpack the layers into snapshots through
//! the snapshot and diff services (containerd 1.6 has no server-side pull).
//!
//! What a pull learned is cached in the driver's directory, so a second machine from the
//! same image does no network I/O. Everything is written under one long-lived containerd
//! lease so garbage collection keeps it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, InfoRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::{self, Code};
use containerd_client::types::Descriptor;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Ctx;
use crate::DriverError;

/// What a machine needs from its image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The reference as resolved, with its manifest digest.
    pub resolved: String,
    /// The snapshot holding the unpacked image.
    pub chain_id: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RuntimeConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct ImageConfig {
    #[serde(default)]
    config: Option<RuntimeConfig>,
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// How to reach registries: loopback ones and those named here speak plain HTTP.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    pub insecure: Vec<String>,
}

fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            registry
        }
    });
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

/// Credentials for `registry`: `HANGAR_REGISTRY_AUTH` (`registry=user:password`,
/// comma-separated), else the Docker config file (`$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json`), else anonymous.
fn auth_for(registry: &str) -> RegistryAuth {
    if let Ok(list) = std::env::var("HANGAR_REGISTRY_AUTH") {
        for item in list.split(',') {
            if let Some((reg, cred)) = item.trim().split_once('=') {
                if reg == registry {
                    if let Some((u, p)) = cred.split_once(':') {
                        return RegistryAuth::Basic(u.into(), p.into());
                    }
                }
            }
        }
    }
    let path = std::env::var_os("DOCKER_CONFIG")
        .map(|d| PathBuf::from(d).join("config.json"))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")));
    if let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            let keys = [
                registry.to_string(),
                format!("https://{registry}"),
                "https://index.docker.io/v1/".into(),
            ];
            for k in keys
                .iter()
                .take(if registry == "docker.io" { 3 } else { 2 })
            {
                if let Some(encoded) = v["auths"][k]["auth"].as_str() {
                    if let Some((u, p)) = decode_basic(encoded) {
                        return RegistryAuth::Basic(u, p);
                    }
                }
            }
        }
    }
    RegistryAuth::Anonymous
}

fn decode_basic(b64: &str) -> Option<(String, String)> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in b64.bytes().filter(|c| *c != b'=') {
        let v = T.iter().position(|x| *x == c)? as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    let s = String::from_utf8(out).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `chain[0] = diff[0]`, `chain[i] = sha256(chain[i-1] + " " + diff[i])`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => format!("sha256:{}", sha256_hex(format!("{parent} {d}").as_bytes())),
        };
        out.push(next);
    }
    out
}

fn cache_path(dir: &Path, image: &str) -> PathBuf {
    dir.join(format!("{}.json", sha256_hex(image.as_bytes())))
}

fn pull_error(image: &str, e: impl std::fmt::Display) -> DriverError {
    DriverError::InvalidConfig(format!("cannot pull image {image:?}: {e}"))
}

impl Ctx {
    async fn snapshot_exists(&self, key: &str) -> bool {
        let req = StatSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.to_string(),
        };
        SnapshotsClient::new(self.channel.clone())
            .stat(self.req(req))
            .await
            .is_ok()
    }

    /// The image, pulled and unpacked if it is not already.
    pub async fn ensure_image(&self, image: &str) -> Result<ImageInfo, DriverError> {
        let cache = cache_path(&self.images_dir, image);
        if let Ok(bytes) = tokio::fs::read(&cache).await {
            if let Ok(info) = serde_json::from_slice::<ImageInfo>(&bytes) {
                if self.snapshot_exists(&info.chain_id).await {
                    return Ok(info);
                }
            }
        }
        let _guard = self.pull_lock.lock().await;
        let info = self.pull(image).await?;
        tokio::fs::create_dir_all(&self.images_dir)
            .await
            .map_err(|e| DriverError::io("create image cache", e))?;
        let bytes = serde_json::to_vec(&info)
            .map_err(|e| DriverError::io("encode image cache", e.into()))?;
        tokio::fs::write(&cache, bytes)
            .await
            .map_err(|e| DriverError::io("write image cache", e))?;
        Ok(info)
    }

    async fn pull(&self, image: &str) -> Result<ImageInfo, DriverError> {
        let reference: Reference = image.parse().map_err(|e| {
            DriverError::InvalidConfig(format!("invalid image reference {image:?}: {e}"))
        })?;
        let registry = reference.resolve_registry().to_string();
        let client = self.registry_client(&registry);
        let auth = auth_for(&registry);
        let (manifest, digest) = client
            .pull_image_manifest(&reference, &auth)
            .await
            .map_err(|e| pull_error(image, e))?;
        let pinned = reference.clone_with_digest(digest.clone());
        let (raw_manifest, _) = client
            .pull_manifest_raw(
                &pinned,
                &auth,
                &[&manifest
                    .media_type
                    .clone()
                    .unwrap_or_else(|| oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.to_string())],
            )
            .await
            .map_err(|e| pull_error(image, e))?;
        let mut config_bytes = Vec::new();
        client
            .pull_blob(&pinned, &manifest.config, &mut config_bytes)
            .await
            .map_err(|e| pull_error(image, e))?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| pull_error(image, format!("image config is not valid: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(pull_error(
                image,
                "the image config and manifest disagree on the layers",
            ));
        }
        self.write_content(&digest, raw_manifest.to_vec()).await?;
        self.write_content(&manifest.config.digest, config_bytes.clone())
            .await?;
        let chains = chain_ids(&config.rootfs.diff_ids);
        self.unpack_layers(image, &client, &pinned, &manifest.layers, &chains)
            .await?;
        let rc = config.config.unwrap_or_default();
        Ok(ImageInfo {
            resolved: format!(
                "{}@{digest}",
                reference.whole().split('@').next().unwrap_or(image)
            ),
            chain_id: chains
                .last()
                .cloned()
                .ok_or_else(|| pull_error(image, "the image has no layers"))?,
            entrypoint: rc.entrypoint.unwrap_or_default(),
            cmd: rc.cmd.unwrap_or_default(),
            env: rc.env.unwrap_or_default(),
            working_dir: rc.working_dir.unwrap_or_default(),
            user: rc.user.unwrap_or_default(),
        })
    }

    /// A client for `registry`: plain HTTP for loopback registries and those configured
    /// as insecure, else HTTPS.
    fn registry_client(&self, registry: &str) -> oci_client::Client {
        let plain_http =
            is_loopback(registry) || self.registries.insecure.iter().any(|r| r == registry);
        oci_client::Client::new(ClientConfig {
            protocol: if plain_http {
                ClientProtocol::HttpsExcept(vec![registry.to_string()])
            } else {
                ClientProtocol::Https
            },
            ..Default::default()
        })
    }

    /// Fetches and unpacks each layer of `image` whose snapshot (`chains[i]`, on the
    /// one before it) is not there yet.
    async fn unpack_layers(
        &self,
        image: &str,
        client: &oci_client::Client,
        pinned: &Reference,
        layers: &[OciDescriptor],
        chains: &[String],
    ) -> Result<(), DriverError> {
        for (i, layer) in layers.iter().enumerate() {
            if self.snapshot_exists(&chains[i]).await {
                continue;
            }
            self.fetch_layer(client, pinned, layer)
                .await
                .map_err(|e| match e {
                    DriverError::InvalidConfig(m) => pull_error(image, m),
                    other => other,
                })?;
            self.unpack_layer(
                layer,
                i.checked_sub(1).map(|p| chains[p].as_str()),
                &chains[i],
            )
            .await?;
        }
        Ok(())
    }

    async fn has_content(&self, digest: &str) -> bool {
        ContentClient::new(self.channel.clone())
            .info(self.req(InfoRequest {
                digest: digest.to_string(),
            }))
            .await
            .is_ok()
    }

    async fn write_content(&self, digest: &str, data: Vec<u8>) -> Result<(), DriverError> {
        if self.has_content(digest).await {
            return Ok(());
        }
        let total = data.len() as i64;
        let chunks = futures_util::stream::iter(vec![Ok::<_, DriverError>(bytes_chunk(data))]);
        self.write_stream(digest, total, chunks).await
    }

    async fn fetch_layer(
        &self,
        client: &oci_client::Client,
        image: &Reference,
        layer: &OciDescriptor,
    ) -> Result<(), DriverError> {
        if self.has_content(&layer.digest).await {
            return Ok(());
        }
        let stream = client
            .pull_blob_stream(image, layer)
            .await
            .map_err(|e| DriverError::InvalidConfig(e.to_string()))?;
        let chunks = stream.map(|r| {
            r.map(bytes_chunk)
                .map_err(|e| DriverError::InvalidConfig(e.to_string()))
        });
        self.write_stream(&layer.digest, layer.size, chunks).await
    }

    /// Writes a blob through the content service: its chunks, then a commit that checks
    /// size and digest.
    async fn write_stream(
        &self,
        digest: &str,
        total: i64,
        chunks: impl futures_util::Stream<Item = Result<Vec<u8>, DriverError>> + Send + 'static,
    ) -> Result<(), DriverError> {
        let reference = format!("hangar-{}", digest.replace(':', "-"));
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let (r, d) = (reference.clone(), digest.to_string());
        let feeder = tokio::spawn(async move {
            let mut offset = 0i64;
            let mut chunks = Box::pin(chunks);
            while let Some(chunk) = chunks.next().await {
                let data = chunk?;
                let len = data.len() as i64;
                let req = WriteContentRequest {
                    action: WriteAction::Write as i32,
                    r#ref: r.clone(),
                    total,
                    expected: d.clone(),
                    offset,
                    data,
                    labels: HashMap::new(),
                };
                offset += len;
                if tx.send(req).await.is_err() {
                    break;
                }
            }
            let commit = WriteContentRequest {
                action: WriteAction::Commit as i32,
                r#ref: r,
                total,
                expected: d,
                offset,
                data: Vec::new(),
                labels: HashMap::new(),
            };
            let _ = tx.send(commit).await;
            Ok::<_, DriverError>(())
        });
        let requests =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
            );
        let result = ContentClient::new(self.channel.clone())
            .write(self.req(requests))
            .await;
        let mut responses = match result {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
            Err(s) => return Err(grpc("write content", s)),
        };
        loop {
            match responses.message().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(s) if s.code() == Code::AlreadyExists => break,
                Err(s) => return Err(grpc(&format!("write {digest}"), s)),
            }
        }
        feeder.await.map_err(|e| {
            DriverError::io("write content", std::io::Error::other(e.to_string()))
        })??;
        Ok(())
    }

    /// Applies one layer on top of `parent` and commits it as the snapshot `chain_id`.
    async fn unpack_layer(
        &self,
        layer: &OciDescriptor,
        parent: Option<&str>,
        chain_id: &str,
    ) -> Result<(), DriverError> {
        let key = format!("extract-{}-{}", rand::random::<u32>(), chain_id);
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let prepared = snapshots
            .prepare(self.req(PrepareSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.clone(),
                parent: parent.unwrap_or_default().to_string(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(|s| grpc("prepare snapshot", s))?
            .into_inner();
        let applied = DiffClient::new(self.channel.clone())
            .apply(self.req(ApplyRequest {
                diff: Some(Descriptor {
                    media_type: layer.media_type.clone(),
                    digest: layer.digest.clone(),
                    size: layer.size,
                    annotations: HashMap::new(),
                }),
                mounts: prepared.mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            }))
            .await;
        if let Err(s) = applied {
            let _ = snapshots
                .remove(self.req(RemoveSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key,
                }))
                .await;
            return Err(grpc(&format!("unpack layer {}", layer.digest), s));
        }
        match snapshots
            .commit(self.req(CommitSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                name: chain_id.to_string(),
                key,
                labels: HashMap::new(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(grpc("commit snapshot", s)),
        }
    }
}

fn bytes_chunk(b: impl Into<Vec<u8>>) -> Vec<u8> {
    b.into()
}

pub(super) fn grpc(context: &str, s: tonic::Status) -> DriverError {
    DriverError::io(
        context.to_string(),
        std::io::Error::other(format!("{}: {}", s.code(), s.message())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let ids = chain_ids(&["sha256:a".into(), "sha256:b".into()]);
        assert_eq!(ids[0], "sha256:a");
        assert_eq!(
            ids[1],
            format!("sha256:{}", sha256_hex(b"sha256:a sha256:b"))
        );
    }

    #[test]
    fn loopback_registries_are_plain_http() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(!is_loopback("registry.example.com"));
        assert_eq!(
            decode_basic("dXNlcjpwYXNz"),
            Some(("user".into(), "pass".into()))
        );
    }
}
