//! Tunnels into an app's private network (`/apps/{app}/proxy`), for `hangar proxy`:
//! where a private host leads, and one connection to it carried over the API.

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
        let res = self
            .http
            .get(&url)
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
