//! Byte streams through the API: tunnels into an app's private network
//! (`/apps/{app}/proxy`, for `hangar proxy`: where a private host leads, and one
//! connection to it) and console sessions in a machine
//! (`/apps/{app}/machines/{id}/console`, for `hangar ssh console`).

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::{api_error, Client, ClientError, Result};

/// The `Upgrade` protocol of a tunnel.
const TUNNEL_PROTOCOL: &str = "hangar-tunnel";

/// Where a private host leads.
#[derive(Debug, Clone, Deserialize)]
pub struct PrivateHost {
    /// The name as the server understood it (`<app>.internal` by default).
    pub host: String,
    pub port: u16,
    pub addresses: Vec<std::net::Ipv6Addr>,
}

/// A byte stream to a private host, as the server switched the request into.
pub type TunnelStream = reqwest::Upgraded;

fn query(host: Option<&str>, port: u16) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("port", &port.to_string());
    if let Some(h) = host {
        q.append_pair("host", h);
    }
    q.finish()
}

impl Client {
    /// Where `host` (default `<app>.internal`) leads on the app's private network.
    pub async fn resolve_private(
        &self,
        app: &str,
        host: Option<&str>,
        port: u16,
    ) -> Result<PrivateHost> {
        let path = format!("/apps/{app}/proxy?{}", query(host, port));
        self.call(Method::GET, &path, Self::NONE, &[]).await
    }

    /// Opens one connection to `host:port` on the app's private network.
    pub async fn open_tunnel(
        &self,
        app: &str,
        host: Option<&str>,
        port: u16,
    ) -> Result<TunnelStream> {
        let url = format!("{}/v1/apps/{app}/proxy?{}", self.base, query(host, port));
        self.upgrade(self.http.get(&url)).await
    }

    /// Sends a request that asks to become a tunnel.
    async fn upgrade(&self, req: reqwest::RequestBuilder) -> Result<TunnelStream> {
        let res = req
            .bearer_auth(&self.token)
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, TUNNEL_PROTOCOL)
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        let status = res.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            let text = res.text().await.unwrap_or_default();
            return Err(api_error(status, &text));
        }
        res.upgrade()
            .await
            .map_err(|e| ClientError::Decode(format!("the tunnel did not open: {e}")))
    }
}

/// A console session to open (`hangar ssh console`).
#[derive(Debug, Clone, Default)]
pub struct ConsoleRequest {
    /// The command as one line, split as a shell would; empty for the login shell.
    pub command: String,
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
    pub user: Option<String>,
}

impl Client {
    /// Opens a console session in machine `id`: a stream of console frames.
    pub async fn open_console(
        &self,
        app: &str,
        id: &str,
        req: &ConsoleRequest,
    ) -> Result<TunnelStream> {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("command", &req.command)
            .append_pair("tty", if req.tty { "true" } else { "false" })
            .append_pair("rows", &req.rows.to_string())
            .append_pair("cols", &req.cols.to_string());
        if let Some(u) = &req.user {
            q.append_pair("user", u);
        }
        let url = format!(
            "{}/v1/apps/{app}/machines/{id}/console?{}",
            self.base,
            q.finish()
        );
        self.upgrade(self.http.get(&url)).await
    }
}
