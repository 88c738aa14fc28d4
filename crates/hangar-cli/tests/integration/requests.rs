//! What real Fly clients send: token forms, empty POST bodies, `?kill=`, numeric
//! signals, nanosecond durations, unknown fields, `name` or `app_name`, updates by
//! PUT; `Idempotency-Key` on creates; and what they parse: no `null` or empty list
//! where Fly sends nothing, and an app's network as its name.

use serde_json::json;

use crate::harness::TestServer;

#[tokio::test]
async fn token_forms_and_wire_quirks() {
    let s = TestServer::start().await;
    for auth in [
        format!("Bearer {}", s.token),
        format!("FlyV1 {}", s.token),
        format!("FlyV1 fm2_other,{}", s.token),
    ] {
        let r = s
            .raw("GET", "/apps?org_slug=personal", "", Some(&auth))
            .await;
        assert_eq!(r.status, 200, "{auth}: {r:?}");
    }
    // fly-go names the app `name` and adds ?wait=true.
    let r = s
        .call(
            "POST",
            "/apps?wait=true",
            Some(json!({"name": "quirks", "org_slug": "personal", "future_field": 1})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["name"], "quirks");
    assert!(
        r.body["created_at"].as_i64().unwrap() > 1_600_000_000_000,
        "created_at is Unix ms"
    );

    let body = json!({"config": {"image": "busybox", "init": {"exec": ["sleep", "300"]}, "services": [
        {"protocol": "tcp", "internal_port": 8080, "autostop": "suspend", "force_instance_key": null,
         "checks": [{"type": "http", "interval": 15000000000u64, "timeout": "2s"}]}],
        "stop_config": {"timeout": 5000000000u64, "signal": "SIGTERM"}, "brand_new": {"x": 1}}});
    let m = s.call("POST", "/apps/quirks/machines", Some(body)).await;
    assert_eq!(m.status, 200, "{m:?}");
    let id = m.body["id"].as_str().unwrap().to_string();
    let cfg = &m.body["config"];
    assert_eq!(
        cfg["services"][0]["checks"][0]["interval"], "15s",
        "durations come back as Go strings"
    );
    assert_eq!(cfg["stop_config"]["timeout"], "5s");
    assert_eq!(cfg["services"][0]["autostop"], "suspend");
    assert_eq!(cfg["services"][0]["internal_port"], 8080);
    assert!(cfg.get("brand_new").is_none(), "unknown fields are ignored");
    s.wait_state("quirks", &id, "started").await;

    // Signals as numbers and names.
    let r = s
        .call(
            "POST",
            &format!("/apps/quirks/machines/{id}/signal"),
            Some(json!({"signal": 10})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = s
        .call(
            "POST",
            &format!("/apps/quirks/machines/{id}/signal"),
            Some(json!({"signal": "SIGUSR1"})),
        )
        .await;
    assert_eq!(r.status, 200);
    // Stop with fly-go's always-present zero timeout; start with no body at all.
    let r = s
        .raw(
            "POST",
            &format!("/apps/quirks/machines/{id}/stop"),
            r#"{"timeout":"0s"}"#,
            Some(&format!("Bearer {}", s.token)),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state("quirks", &id, "stopped").await;
    let r = s
        .raw(
            "POST",
            &format!("/apps/quirks/machines/{id}/start"),
            "",
            Some(&format!("Bearer {}", s.token)),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state("quirks", &id, "started").await;
    // fly-go destroys with ?kill=true.
    let r = s
        .call(
            "DELETE",
            &format!("/apps/quirks/machines/{id}?kill=true"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = s
        .call(
            "GET",
            &format!("/apps/quirks/machines/{id}/wait?state=destroyed&timeout=10"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn idempotency_keys_replay_or_refuse() {
    let s = TestServer::start().await;
    s.create_app("idem").await;
    let body = json!({"config": {"image": "busybox", "init": {"exec": ["sleep", "300"]}}});
    let key = [("Idempotency-Key", "create-1")];
    let a = s
        .call_with("POST", "/apps/idem/machines", Some(body.clone()), &key)
        .await;
    let b = s
        .call_with("POST", "/apps/idem/machines", Some(body.clone()), &key)
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body["id"], b.body["id"],
        "same key, same body: the first answer again"
    );
    let list = s.call("GET", "/apps/idem/machines", None).await.body;
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "only one machine was made"
    );

    let other = json!({"config": {"image": "other", "init": {"exec": ["sleep", "300"]}}});
    let c = s
        .call_with("POST", "/apps/idem/machines", Some(other), &key)
        .await;
    assert_eq!(c.status, 422, "{c:?}");
    assert!(c.error().contains("Idempotency-Key"), "{c:?}");

    let app_key = [("Idempotency-Key", "app-1")];
    let body = json!({"app_name": "idem-two", "org_slug": "personal"});
    let a = s
        .call_with("POST", "/apps", Some(body.clone()), &app_key)
        .await;
    let b = s.call_with("POST", "/apps", Some(body), &app_key).await;
    assert_eq!((a.status, b.status), (201, 201));
    assert_eq!(a.body["id"], b.body["id"]);
}

#[tokio::test]
async fn config_files_land_in_the_machine_directory() {
    let s = TestServer::start().await;
    s.create_app("files").await;
    let m = s
        .create_machine(
            "files",
            "exec sleep 300",
            json!({"files": [{"guest_path": "/etc/app.conf", "raw_value": "a2V5PXZhbHVl", "mode": 420}]}),
        )
        .await;
    let id = m["id"].as_str().unwrap();
    s.wait_state("files", id, "started").await;
    let out = s.exec("files", id, &["cat", "etc/app.conf"]).await;
    assert_eq!(out["stdout"], "key=value");
    let r = s
        .call(
            "POST",
            "/apps/files/machines",
            Some(json!({"config": {"image": "x", "init": {"exec": ["true"]},
            "files": [{"guest_path": "/../../escape", "raw_value": "eA=="}]}})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains(".."), "{r:?}");
}

#[tokio::test]
async fn answers_strict_clients_can_parse_and_updates_by_put() {
    let s = TestServer::start().await;
    s.create_app("strict").await;
    let m = s
        .create_machine(
            "strict",
            "exec sleep 300",
            json!({"mounts": [], "env": {}, "metadata": {}, "files": [], "standbys": [],
                "services": [{"protocol": "tcp", "internal_port": 8080, "force_instance_key": null,
                    "ports": [{"port": 80, "handlers": ["http"]}], "checks": []}]}),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    s.wait_state("strict", &id, "started").await;
    for (what, body) in [
        ("create answer", m),
        ("machine", s.machine("strict", &id).await),
        (
            "listing",
            s.call("GET", "/apps/strict/machines", None).await.body,
        ),
        (
            "versions",
            s.call("GET", &format!("/apps/strict/machines/{id}/versions"), None)
                .await
                .body,
        ),
        (
            "addresses",
            s.call("GET", "/apps/strict/ip_assignments", None)
                .await
                .body,
        ),
        (
            "certificates",
            s.call("GET", "/apps/strict/certificates", None).await.body,
        ),
    ] {
        let mut found = hangar_types::omit::empties(&body, what);
        // `init`'s lists mean "none of the image's", and are kept; Fly sends maps such as
        // an image's `labels` even when empty.
        found.retain(|f| !f.contains(".init.") && !f.starts_with("{}"));
        assert!(found.is_empty(), "{what}: {found:?}\n{body}");
    }
    // An app's network is its name, a string.
    let apps = s.call("GET", "/apps?org_slug=personal", None).await.body;
    assert!(apps["apps"][0]["network"].is_string(), "{apps}");

    // PUT is the same update as POST.
    let mut config = s.machine("strict", &id).await["config"].clone();
    config["env"] = json!({"BY": "put"});
    let r = s
        .call(
            "PUT",
            &format!("/apps/strict/machines/{id}"),
            Some(json!({"config": config})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["config"]["env"]["BY"], "put");
    s.wait_state("strict", &id, "started").await;
    assert_eq!(s.machine("strict", &id).await["config"]["env"]["BY"], "put");
}
