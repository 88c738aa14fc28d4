//! Snapshots in an S3-compatible bucket (AWS S3, MinIO, Ceph, Garage, R2…): each key is
//! an object under the configured prefix. Requests are signed with AWS Signature
//! Version 4 (`rusty-s3`, as short-lived presigned URLs) and sent with the agent's HTTP
//! client; a failed request is tried again a few times with backoff when the failure
//! may pass (a dropped connection, a 5xx, a 429). Credentials come from the
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), never
//! from a flag, and never appear in a message.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
pub use rusty_s3::Credentials;
use rusty_s3::{Bucket, S3Action, UrlStyle};

use super::store::{check_key, SnapshotStore};
use crate::volumes::VolumeError;

/// How long a signed request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(300);

/// Where the bucket is, as the operator gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// `https://s3.<region>.amazonaws.com`, or another S3-compatible server's URL.
    pub endpoint: url::Url,
    pub bucket: String,
    /// Prepended to every key (`hangar/` keeps snapshots beside other data).
    pub prefix: String,
    pub region: String,
}

impl S3Config {
    /// Reads `s3://bucket[/prefix]`, with the endpoint and region given apart.
    pub fn parse(location: &str, endpoint: Option<&str>, region: &str) -> Result<S3Config, String> {
        let rest = location.strip_prefix("s3://").ok_or_else(|| {
            format!("the snapshot bucket must look like s3://BUCKET[/PREFIX], not {location:?}")
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(format!(
                "{bucket:?} is not an S3 bucket name (3 to 63 lowercase letters, digits, dots and dashes)"
            ));
        }
        let prefix = prefix.trim_matches('/');
        let endpoint = endpoint
            .map(str::to_string)
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = url::Url::parse(&endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                format!("the snapshot endpoint must be an http(s) URL such as https://s3.us-east-1.amazonaws.com, not {endpoint:?}")
            })?;
        Ok(S3Config {
            endpoint,
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            region: region.to_string(),
        })
    }
}

pub struct S3Store {
    config: S3Config,
    bucket: Bucket,
    credentials: Credentials,
    http: reqwest::Client,
}

/// What a failed request means, and whether trying again may help.
struct Failure {
    error: VolumeError,
    transient: bool,
}

impl S3Store {
    /// The store, with credentials from the environment.
    pub fn new(config: S3Config) -> Result<S3Store, String> {
        let credentials = Credentials::from_env().ok_or_else(|| {
            "a snapshot bucket needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment".to_string()
        })?;
        S3Store::with_credentials(config, credentials)
    }

    /// The store, signing with `credentials`.
    pub fn with_credentials(config: S3Config, credentials: Credentials) -> Result<S3Store, String> {
        let bucket = Bucket::new(
            config.endpoint.clone(),
            UrlStyle::Path,
            config.bucket.clone(),
            config.region.clone(),
        )
        .map_err(|e| format!("the snapshot bucket cannot be used: {e}"))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(S3Store {
            config,
            bucket,
            credentials,
            http,
        })
    }

    fn object(&self, key: &str) -> Result<String, VolumeError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.config.prefix))
    }

    /// Sends what `request` builds (signed afresh each try), trying again while the
    /// failure may pass; answers the response when its status is one of `ok`.
    async fn send<F>(
        &self,
        what: &str,
        ok: &[u16],
        request: F,
    ) -> Result<reqwest::Response, VolumeError>
    where
        F: Fn() -> reqwest::RequestBuilder,
    {
        let attempt = || async {
            let response = request().send().await.map_err(|e| Failure {
                error: VolumeError::Failed(format!(
                    "cannot reach the snapshot bucket {} to {what}: {}",
                    self.location(),
                    without_url(&e)
                )),
                transient: true,
            })?;
            let status = response.status().as_u16();
            if ok.contains(&status) {
                return Ok(response);
            }
            let body = response.text().await.unwrap_or_default();
            Err(self.refusal(what, status, &body))
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_times(4),
            )
            .when(|f: &Failure| f.transient)
            .await
            .map_err(|f| f.error)
    }

    fn refusal(&self, what: &str, status: u16, body: &str) -> Failure {
        let code = between(body, "<Code>", "</Code>").unwrap_or_default();
        let at = self.location();
        let error = match (status, code) {
            (_, "NoSuchBucket") => VolumeError::Failed(format!(
                "the snapshot bucket {at} does not exist: create it, or point --snapshot-bucket at one that does"
            )),
            (403, _) | (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied") => {
                VolumeError::Failed(format!(
                    "the snapshot bucket {at} refused to {what} ({code}): check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's policy"
                ))
            }
            _ => VolumeError::Failed(format!(
                "the snapshot bucket {at} answered {status} {code} to {what}"
            )),
        };
        Failure {
            error,
            transient: status >= 500 || status == 429,
        }
    }
}

/// A reqwest error without its URL (a presigned URL carries a signature).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "");
    }
    s
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let end = s[start..].find(close)? + start;
    Some(&s[start..end])
}

#[async_trait::async_trait]
impl SnapshotStore for S3Store {
    fn location(&self) -> String {
        format!(
            "s3://{}/{} at {}",
            self.config.bucket,
            self.config.prefix,
            self.config.endpoint.as_str().trim_end_matches('/')
        )
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), VolumeError> {
        let object = self.object(key)?;
        let body = bytes::Bytes::from(bytes);
        self.send("store a snapshot", &[200], || {
            let url = self
                .bucket
                .put_object(Some(&self.credentials), &object)
                .sign(SIGNED_FOR);
            self.http.put(url).body(body.clone())
        })
        .await
        .map(|_| ())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, VolumeError> {
        let object = self.object(key)?;
        let response = self
            .send("read a snapshot", &[200, 404], || {
                let url = self
                    .bucket
                    .get_object(Some(&self.credentials), &object)
                    .sign(SIGNED_FOR);
                self.http.get(url)
            })
            .await?;
        if response.status().as_u16() == 404 {
            let body = response.text().await.unwrap_or_default();
            if between(&body, "<Code>", "</Code>") == Some("NoSuchBucket") {
                return Err(self.refusal("read a snapshot", 404, &body).error);
            }
            return Ok(None);
        }
        let bytes = response.bytes().await.map_err(|e| {
            VolumeError::Failed(format!(
                "cannot read a snapshot from {}: {}",
                self.location(),
                without_url(&e)
            ))
        })?;
        Ok(Some(bytes.to_vec()))
    }

    async fn delete(&self, key: &str) -> Result<(), VolumeError> {
        let object = self.object(key)?;
        self.send("remove a snapshot", &[200, 204, 404], || {
            let url = self
                .bucket
                .delete_object(Some(&self.credentials), &object)
                .sign(SIGNED_FOR);
            self.http.delete(url)
        })
        .await
        .map(|_| ())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, VolumeError> {
        check_key(prefix.trim_end_matches('/'))?;
        let full = format!("{}{prefix}", self.config.prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let response = self
                .send("list snapshots", &[200], || {
                    let mut list = self.bucket.list_objects_v2(Some(&self.credentials));
                    list.with_prefix(full.as_str());
                    if let Some(t) = &token {
                        list.with_continuation_token(t.as_str());
                    }
                    self.http.get(list.sign(SIGNED_FOR))
                })
                .await?;
            let text = response.text().await.map_err(|e| {
                VolumeError::Failed(format!(
                    "cannot list snapshots in {}: {}",
                    self.location(),
                    without_url(&e)
                ))
            })?;
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&text).map_err(|e| {
                VolumeError::Failed(format!(
                    "the snapshot bucket {} answered a listing that is not S3's: {e}",
                    self.location()
                ))
            })?;
            for object in page.contents {
                if let Some(key) = object.key.strip_prefix(&self.config.prefix) {
                    out.push((key.to_string(), object.size.unwrap_or(0)));
                }
            }
            match page.next_continuation_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_locations_are_read_or_refused_with_a_reason() {
        let c = S3Config::parse(
            "s3://snaps/hangar/prod/",
            Some("http://127.0.0.1:9000"),
            "us-east-1",
        )
        .unwrap();
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("snaps", "hangar/prod/")
        );
        assert_eq!(c.endpoint.as_str(), "http://127.0.0.1:9000/");
        let aws = S3Config::parse("s3://my-bucket", None, "eu-west-1").unwrap();
        assert_eq!(aws.endpoint.as_str(), "https://s3.eu-west-1.amazonaws.com/");
        assert_eq!(aws.prefix, "");
        assert!(S3Config::parse("snaps", None, "us-east-1")
            .unwrap_err()
            .contains("s3://BUCKET"));
        assert!(S3Config::parse("s3://No_Such", None, "us-east-1")
            .unwrap_err()
            .contains("bucket name"));
        assert!(S3Config::parse("s3://snaps", Some("ftp://x"), "us-east-1")
            .unwrap_err()
            .contains("http(s)"));
    }
}
