//! The Machines API driven in-process (`tower::ServiceExt::oneshot` on the router),
//! over the recording driver: no sockets, no processes, so the request → handler →
//! agent → store path and Fly's status codes and bodies are checked in milliseconds.
//! The process-level integration tests in hangar-cli cover the same routes for real.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hangar_runtime::fake::FakeDriver;
use hangar_server::{edge, open_store, Database, Host, Server, ServerConfig};
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN: &str = "in-process-admin-token";

async fn server(dir: &std::path::Path) -> Server {
    let any = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        data_dir: dir.to_path_buf(),
        api_listen: any,
        region: "ord".into(),
        admin_token: Some(TOKEN.into()),
        http_listen: any,
        app_domain: "localhost".into(),
        autostop_interval: std::time::Duration::from_secs(300),
        volume_upkeep_interval: std::time::Duration::from_secs(600),
        https_listen: any,
        proxy_response_timeout: std::time::Duration::from_secs(5),
        proxy_queue_timeout: std::time::Duration::from_secs(5),
        ip_pools: edge::Pools::parse("127.0.9.0/30", "fd68:616e:6761:99::/64").unwrap(),
        acme: edge::AcmeSettings {
            config: edge::AcmeConfig {
                directory: "https://127.0.0.1:1/dir".into(),
                root: None,
                contact: None,
                state_dir: dir.join("acme"),
            },
            method: edge::AcmeMethod::TlsAlpn01,
        },
        master_key: None,
        registry_listen: any,
        prices: Default::default(),
        volumes: Default::default(),
        dns: Default::default(),
        wireguard: hangar_agent::gateway::GatewaySettings {
            interface: "hangar-wg".into(),
            port: 51820,
            dir: dir.join("wireguard"),
        },
        wireguard_endpoint: None,
        memory_overcommit: 1.0,
    };
    let store = open_store(Database::Sqlite(dir.join("hangar.db")))
        .await
        .unwrap();
    let driver = Arc::new(FakeDriver::default());
    Server::start(config, store, Host::Embedded(driver))
        .await
        .unwrap()
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(format!("/v1{path}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(match body {
            Some(b) => Body::from(b.to_string()),
            None => Body::empty(),
        })
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_machine_is_created_started_stopped_and_destroyed_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let app = s.router();

    let (status, _) = call(
        &app,
        "POST",
        "/apps",
        Some(json!({"app_name": "web", "org_slug": "personal"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, m) = call(
        &app,
        "POST",
        "/apps/web/machines",
        Some(json!({"config": {"image": "img", "init": {"exec": ["/bin/sleep", "inf"]}}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_str().unwrap().to_string();
    let (status, w) = call(
        &app,
        "GET",
        &format!("/apps/web/machines/{id}/wait?state=started&timeout=5"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{w}");

    // Fly's precondition: a started machine is not destroyed without force.
    let (status, e) = call(&app, "DELETE", &format!("/apps/web/machines/{id}"), None).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("failed_precondition"),
        "{e}"
    );

    let (status, _) = call(&app, "POST", &format!("/apps/web/machines/{id}/stop"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &app,
        "GET",
        &format!("/apps/web/machines/{id}/wait?state=stopped&timeout=5"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, events) = call(
        &app,
        "GET",
        &format!("/apps/web/machines/{id}/events"),
        None,
    )
    .await;
    let kinds: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| {
            format!(
                "{}/{}",
                e["type"].as_str().unwrap(),
                e["status"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "launch/created",
            "start/starting",
            "start/started",
            "stop/stopping",
            "exit/stopped"
        ]
    );

    let (status, _) = call(&app, "DELETE", &format!("/apps/web/machines/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, e) = call(&app, "GET", "/apps/nope/machines", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{e}");
    let req = Request::builder()
        .uri("/v1/apps/web/machines")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // As root, the server made its IPv6 pool local; take it back.
    let _ = std::process::Command::new("ip")
        .args([
            "-6",
            "route",
            "del",
            "local",
            "fd68:616e:6761:99::/64",
            "dev",
            "lo",
        ])
        .stderr(std::process::Stdio::null())
        .status();
}
