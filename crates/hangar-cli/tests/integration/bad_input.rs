//! Bad input gets a clear 4xx with Fly's error body and persists nothing.

use serde_json::json;

use crate::harness::TestServer;

async fn machine_count(s: &TestServer, app: &str) -> usize {
    s.call(
        "GET",
        &format!("/apps/{app}/machines?include_deleted=true"),
        None,
    )
    .await
    .body
    .as_array()
    .map(|a| a.len())
    .unwrap_or(0)
}

#[tokio::test]
async fn bad_requests_are_refused_and_persist_nothing() {
    let s = TestServer::start().await;
    s.create_app("bad").await;
    let auth = format!("Bearer {}", s.token);

    // Tokens.
    let r = s.raw("GET", "/apps?org_slug=personal", "", None).await;
    assert_eq!(r.status, 401);
    assert!(r.error().contains("Authorization"), "{r:?}");
    let r = s
        .raw("GET", "/apps?org_slug=personal", "", Some("Bearer nope"))
        .await;
    assert_eq!(
        (r.status, r.error()),
        (401, "Authenticate: token validation error")
    );
    let r = s
        .raw(
            "POST",
            "/apps",
            r#"{"app_name":"sneaky","org_slug":"personal"}"#,
            Some("FlyV1 wrong"),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(s.call("GET", "/apps/sneaky", None).await.status, 404);

    // Malformed JSON.
    let r = s
        .raw(
            "POST",
            "/apps/bad/machines",
            r#"{"config": {"image": "x""#,
            Some(&auth),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("malformed JSON"), "{r:?}");
    let r = s.raw("POST", "/apps", "[1,2", Some(&auth)).await;
    assert_eq!(r.status, 400);

    // Unknown app and machine.
    let r = s.call("GET", "/apps/nope/machines", None).await;
    assert_eq!((r.status, r.error()), (404, "app not found"));
    let r = s
        .call("GET", "/apps/bad/machines/00000000000000", None)
        .await;
    assert_eq!((r.status, r.error()), (404, "machine not found"));
    let r = s
        .call("POST", "/apps/bad/machines/00000000000000/start", None)
        .await;
    assert_eq!(r.status, 404);
    let r = s.call("GET", "/nowhere", None).await;
    assert_eq!(r.status, 404);
    assert!(!r.error().is_empty());

    // Invalid and taken app names.
    for name in ["Bad_Name", "-dash", "x", &"a".repeat(64)] {
        let r = s
            .call(
                "POST",
                "/apps",
                Some(json!({"app_name": name, "org_slug": "personal"})),
            )
            .await;
        assert_eq!(r.status, 422, "{name}: {r:?}");
        assert!(r.error().contains("invalid app name"), "{r:?}");
    }
    let r = s
        .call(
            "POST",
            "/apps",
            Some(json!({"app_name": "bad", "org_slug": "personal"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (422, Some("name_taken"))
    );
    let r = s
        .call("POST", "/apps", Some(json!({"org_slug": "personal"})))
        .await;
    assert_eq!(r.status, 400);
    let apps = s.call("GET", "/apps?org_slug=personal", None).await.body;
    assert_eq!(apps["total_apps"], 1);

    // Bad machine configs and durations.
    let bad_configs = [
        (json!({}), "config is required"),
        (json!({"config": {}}), "config.image is required"),
        (json!({"config": {"image": "x"}}), "init.exec"),
        (
            json!({"config": {"image": "x", "init": {"exec": ["sleep"]}, "stop_config": {"timeout": "ten parsecs"}}}),
            "invalid duration",
        ),
        (
            json!({"config": {"image": "x", "init": {"exec": ["sleep"]}, "checks": {"web": {"interval": "soon"}}}}),
            "invalid duration",
        ),
        (
            json!({"config": {"image": "x", "init": {"exec": ["sleep"]}, "guest": {"memory_mb": 16}}}),
            "memory_mb",
        ),
        (
            json!({"config": {"image": "x", "init": {"exec": ["sleep"]}, "restart": {"policy": "sometimes"}}}),
            "restart policy",
        ),
        (
            json!({"region": "not a region", "config": {"image": "x", "init": {"exec": ["sleep"]}}}),
            "invalid region",
        ),
    ];
    for (body, want) in bad_configs {
        let r = s
            .call("POST", "/apps/bad/machines", Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert!(
            r.error().contains(want),
            "{body}: expected {want:?} in {r:?}"
        );
    }
    assert_eq!(machine_count(&s, "bad").await, 0, "nothing was persisted");

    // A machine bigger than any host is Fly's capacity error, and is not kept.
    let huge = json!({"config": {"image": "busybox", "init": {"exec": ["sleep", "300"]}, "guest": {"memory_mb": 1_048_576}}});
    let r = s.call("POST", "/apps/bad/machines", Some(huge)).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (503, Some("insufficient_capacity")),
        "{r:?}"
    );
    assert!(
        r.error()
            .starts_with("could not reserve resource for machine"),
        "{r:?}"
    );
    assert_eq!(machine_count(&s, "bad").await, 0, "nothing was persisted");

    // Bad action parameters on a real machine change nothing.
    let m = s.create_machine("bad", "exec sleep 300", json!({})).await;
    let id = m["id"].as_str().unwrap();
    s.wait_state("bad", id, "started").await;
    let r = s
        .call(
            "POST",
            &format!("/apps/bad/machines/{id}/stop"),
            Some(json!({"timeout": "forever"})),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("invalid duration"), "{r:?}");
    let r = s
        .call(
            "POST",
            &format!("/apps/bad/machines/{id}/signal"),
            Some(json!({"signal": "SIGNOPE"})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .call(
            "POST",
            &format!("/apps/bad/machines/{id}/restart?timeout=whenever"),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .call("POST", &format!("/apps/bad/machines/{id}/suspend"), None)
        .await;
    assert_eq!(r.status, 200);
    s.wait_state("bad", id, "suspended").await;
    let r = s
        .call("POST", &format!("/apps/bad/machines/{id}/restart"), None)
        .await;
    assert_eq!(r.status, 412, "restart needs a started machine: {r:?}");
    assert!(r.error().starts_with("failed_precondition:"));
    assert_eq!(s.machine("bad", id).await["state"], "suspended");
    let events = s.events("bad", id).await;
    assert!(
        events
            .iter()
            .all(|e| e["type"] != "stop" && e["type"] != "restart"),
        "{events:?}"
    );
}
