//! A typed client of the Hangar API, which is the Fly Machines API: the CLI and the
//! benchmark use it. It owns HTTP, authentication headers and error decoding; it has no
//! opinion on output formats.

mod billing;
mod deploys;
mod edge;
mod orgs;
mod tunnels;
mod volumes;
mod wireguard;

pub use tunnels::{ConsoleRequest, PrivateHost, TunnelStream};

use hangar_types::requests::{
    CreateMachineRequest, ExecRequest, ExecResponse, StopRequest, WaitResponse,
};
use hangar_types::{
    App, CreateAppRequest, CreateAppResponse, ErrorBody, LeaseEnvelope, ListAppsResponse, LogEntry,
    Machine,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    #[error("cannot reach the Hangar API at {url}: {source} (is `hangar server` running? set HANGAR_API_URL)")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unexpected answer from the API: {0}")]
    Decode(String),
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// The error an API answer carries: Fly's `{"error"}` body, the lease envelope's
/// `message`, or the raw text.
fn api_error(status: StatusCode, text: &str) -> ClientError {
    let message = serde_json::from_str::<ErrorBody>(text)
        .map(|b| b.error)
        .or_else(|_| {
            serde_json::from_str::<LeaseEnvelope>(text).map(|e| e.message.unwrap_or_default())
        })
        .unwrap_or_else(|_| format!("{status}: {text}"));
    // Fly's bare 403: say what it means here.
    let message = if status == StatusCode::FORBIDDEN && message == "unauthorized" {
        "unauthorized: the token is not of the org that holds this (use a token of the app's org, or check the app's name)".to_string()
    } else {
        message
    };
    ClientError::Api { status, message }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// `base` is the server's root URL (`http://127.0.0.1:4280`); `/v1` is added.
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// Sends a request to `/v1{path}` and decodes a JSON answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        headers: &[(&str, &str)],
    ) -> Result<T> {
        let text = self.call_raw(method, path, body, headers).await?;
        let text = if text.trim().is_empty() {
            "null"
        } else {
            &text
        };
        serde_json::from_str(text).map_err(|e| ClientError::Decode(format!("{e}: {text}")))
    }

    pub(crate) async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        headers: &[(&str, &str)],
    ) -> Result<String> {
        let url = format!("{}/v1{}", self.base, path);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        let status = res.status();
        let text = res
            .text()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if status.is_success() {
            return Ok(text);
        }
        Err(api_error(status, &text))
    }

    pub(crate) const NONE: Option<&'static Value> = None;

    pub async fn list_apps(&self, org: &str) -> Result<ListAppsResponse> {
        self.call(
            Method::GET,
            &format!("/apps?org_slug={org}"),
            Self::NONE,
            &[],
        )
        .await
    }

    pub async fn create_app(&self, name: &str, org: &str) -> Result<CreateAppResponse> {
        let body = CreateAppRequest {
            name: Some(name.into()),
            org_slug: Some(org.into()),
            ..Default::default()
        };
        self.call(Method::POST, "/apps", Some(&body), &[]).await
    }

    pub async fn get_app(&self, name: &str) -> Result<App> {
        self.call(Method::GET, &format!("/apps/{name}"), Self::NONE, &[])
            .await
    }

    pub async fn delete_app(&self, name: &str) -> Result<()> {
        self.call_raw(Method::DELETE, &format!("/apps/{name}"), Self::NONE, &[])
            .await
            .map(|_| ())
    }

    pub async fn list_machines(&self, app: &str, include_deleted: bool) -> Result<Vec<Machine>> {
        self.call(
            Method::GET,
            &format!("/apps/{app}/machines?include_deleted={include_deleted}"),
            Self::NONE,
            &[],
        )
        .await
    }

    pub async fn create_machine(&self, app: &str, req: &CreateMachineRequest) -> Result<Machine> {
        self.call(
            Method::POST,
            &format!("/apps/{app}/machines"),
            Some(req),
            &[],
        )
        .await
    }

    pub async fn get_machine(&self, app: &str, id: &str) -> Result<Machine> {
        self.call(
            Method::GET,
            &format!("/apps/{app}/machines/{id}"),
            Self::NONE,
            &[],
        )
        .await
    }

    pub async fn update_machine(
        &self,
        app: &str,
        id: &str,
        req: &CreateMachineRequest,
        nonce: Option<&str>,
    ) -> Result<Machine> {
        let headers: Vec<(&str, &str)> = nonce
            .map(|n| ("fly-machine-lease-nonce", n))
            .into_iter()
            .collect();
        self.call(
            Method::POST,
            &format!("/apps/{app}/machines/{id}"),
            Some(req),
            &headers,
        )
        .await
    }

    /// Runs a lifecycle action (`start`, `suspend`, `cordon`, ...) with an optional body.
    pub async fn action(
        &self,
        app: &str,
        id: &str,
        action: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        self.call(
            Method::POST,
            &format!("/apps/{app}/machines/{id}/{action}"),
            body,
            &[],
        )
        .await
    }

    pub async fn stop_machine(&self, app: &str, id: &str, req: &StopRequest) -> Result<Value> {
        self.call(
            Method::POST,
            &format!("/apps/{app}/machines/{id}/stop"),
            Some(req),
            &[],
        )
        .await
    }

    pub async fn destroy_machine(&self, app: &str, id: &str, force: bool) -> Result<Value> {
        self.call(
            Method::DELETE,
            &format!("/apps/{app}/machines/{id}?force={force}"),
            Self::NONE,
            &[],
        )
        .await
    }

    /// Waits up to `timeout_secs` (1–60) for one of `states`.
    pub async fn wait(
        &self,
        app: &str,
        id: &str,
        states: &str,
        timeout_secs: u64,
    ) -> Result<WaitResponse> {
        self.call(
            Method::GET,
            &format!("/apps/{app}/machines/{id}/wait?state={states}&timeout={timeout_secs}"),
            Self::NONE,
            &[],
        )
        .await
    }

    pub async fn exec(
        &self,
        app: &str,
        id: &str,
        command: Vec<String>,
        timeout: Option<u64>,
    ) -> Result<ExecResponse> {
        let req = ExecRequest {
            command: Some(command),
            timeout,
            ..Default::default()
        };
        self.call(
            Method::POST,
            &format!("/apps/{app}/machines/{id}/exec"),
            Some(&req),
            &[],
        )
        .await
    }

    pub async fn lease(&self, app: &str, id: &str) -> Result<LeaseEnvelope> {
        self.call(
            Method::GET,
            &format!("/apps/{app}/machines/{id}/lease"),
            Self::NONE,
            &[],
        )
        .await
    }

    pub async fn acquire_lease(&self, app: &str, id: &str, ttl: u64) -> Result<LeaseEnvelope> {
        self.call(
            Method::POST,
            &format!("/apps/{app}/machines/{id}/lease?ttl={ttl}"),
            Self::NONE,
            &[],
        )
        .await
    }

    pub async fn release_lease(&self, app: &str, id: &str, nonce: &str) -> Result<Value> {
        self.call(
            Method::DELETE,
            &format!("/apps/{app}/machines/{id}/lease"),
            Self::NONE,
            &[("fly-machine-lease-nonce", nonce)],
        )
        .await
    }

    /// Streams an app's logs, calling `on_entry` for each line, until the server ends the
    /// stream (at once without `follow`).
    pub async fn logs(
        &self,
        app: &str,
        machine: Option<&str>,
        region: Option<&str>,
        follow: bool,
        on_entry: impl FnMut(LogEntry),
    ) -> Result<()> {
        let mut path = format!("/apps/{app}/logs?follow={follow}");
        if let Some(m) = machine {
            path.push_str(&format!("&machine_id={m}"));
        }
        if let Some(r) = region {
            path.push_str(&format!("&region={r}"));
        }
        self.stream_ndjson(&path, on_entry).await
    }

    /// GETs `/v1{path}` and calls `on_item` for each line of the NDJSON answer as it
    /// arrives, until the server ends it.
    pub async fn stream_ndjson<T: DeserializeOwned>(
        &self,
        path: &str,
        on_item: impl FnMut(T),
    ) -> Result<()> {
        let url = format!("{}/v1{path}", self.base);
        self.send_ndjson(self.http.get(&url), on_item).await
    }

    /// Sends `req` with the token and calls `on_item` for each NDJSON line of the
    /// answer as it arrives.
    pub(crate) async fn send_ndjson<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        mut on_item: impl FnMut(T),
    ) -> Result<()> {
        let mut res = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        let status = res.status();
        if !status.is_success() {
            let text = res.text().await.unwrap_or_default();
            return Err(api_error(status, &text));
        }
        let mut pending = Vec::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?
        {
            pending.extend_from_slice(&chunk);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                if let Ok(item) = serde_json::from_slice::<T>(&line) {
                    on_item(item);
                }
            }
        }
        Ok(())
    }

    pub async fn whoami(&self) -> Result<Value> {
        self.call(Method::GET, "/tokens/current", Self::NONE, &[])
            .await
    }
}
