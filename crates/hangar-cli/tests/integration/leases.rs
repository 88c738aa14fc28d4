//! Leases guarding mutations, metadata edits that make no new version, and cordon.

use std::time::Duration;

use serde_json::json;

use crate::harness::TestServer;

const SLEEPER: &str = "exec sleep 300";

#[tokio::test]
async fn leases_guard_mutations() {
    let s = TestServer::start().await;
    s.create_app("lease").await;
    let m = s.create_machine("lease", SLEEPER, json!({})).await;
    let id = m["id"].as_str().unwrap();
    s.wait_state("lease", id, "started").await;
    let lease_path = format!("/apps/lease/machines/{id}/lease");

    let r = s.call("POST", &format!("{lease_path}?ttl=60"), None).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["status"], "success");
    let nonce = r.body["data"]["nonce"].as_str().unwrap().to_string();
    assert_eq!(r.body["data"]["version"], m["instance_id"]);

    let r = s.call("POST", &lease_path, None).await;
    assert_eq!(r.status, 409);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("lease currently held by"),
        "{r:?}"
    );

    let config = m["config"].clone();
    let update = json!({"config": config});
    let r = s
        .call(
            "POST",
            &format!("/apps/lease/machines/{id}"),
            Some(update.clone()),
        )
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert!(
        r.error()
            .starts_with(&format!("aborted: machine ID {id} lease currently held by")),
        "{r:?}"
    );
    let r = s
        .call_with(
            "POST",
            &format!("/apps/lease/machines/{id}/stop"),
            None,
            &[("fly-machine-lease-nonce", "000000000000")],
        )
        .await;
    assert_eq!(r.status, 409);
    let r = s
        .call_with(
            "POST",
            &format!("/apps/lease/machines/{id}"),
            Some(update),
            &[("fly-machine-lease-nonce", &nonce)],
        )
        .await;
    assert_eq!(r.status, 200, "the holder may update: {r:?}");

    let r = s.call("GET", &lease_path, None).await;
    assert_eq!(r.body["data"]["nonce"], nonce.as_str());
    let r = s
        .call_with(
            "POST",
            &format!("{lease_path}?ttl=120"),
            None,
            &[("fly-machine-lease-nonce", &nonce)],
        )
        .await;
    assert_eq!(
        (r.status, r.body["data"]["nonce"].as_str()),
        (201, Some(nonce.as_str())),
        "refresh keeps the nonce"
    );
    let r = s.call("DELETE", &lease_path, None).await;
    assert_eq!(r.status, 400, "release needs the nonce");
    let r = s
        .call_with(
            "DELETE",
            &lease_path,
            None,
            &[("fly-machine-lease-nonce", &nonce)],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(s.call("GET", &lease_path, None).await.status, 404);

    // An expired nonce is refused with a clear message.
    let r = s.call("POST", &lease_path, Some(json!({"ttl": 1}))).await;
    let short = r.body["data"]["nonce"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = s
        .call_with(
            "POST",
            &format!("/apps/lease/machines/{id}/cordon"),
            None,
            &[("fly-machine-lease-nonce", &short)],
        )
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.error().contains("expired"), "{r:?}");
    assert_eq!(
        s.machine("lease", id).await["cordoned"],
        false,
        "nothing changed"
    );
}

#[tokio::test]
async fn metadata_and_cordon() {
    let s = TestServer::start().await;
    s.create_app("meta").await;
    let m = s.create_machine("meta", SLEEPER, json!({})).await;
    let id = m["id"].as_str().unwrap();
    let v = m["instance_id"].as_str().unwrap();
    let md = format!("/apps/meta/machines/{id}/metadata");

    assert_eq!(
        s.call("POST", &format!("{md}/role"), Some(json!({"value": "web"})))
            .await
            .status,
        204
    );
    assert_eq!(
        s.call("GET", &format!("{md}/role"), None).await.body,
        json!({"value": "web"})
    );
    assert_eq!(s.call("GET", &md, None).await.body["role"], "web");
    assert_eq!(
        s.machine("meta", id).await["instance_id"],
        v,
        "metadata makes no new version"
    );
    let hits = s
        .call("GET", "/apps/meta/machines?metadata.role=web", None)
        .await
        .body;
    assert_eq!(hits.as_array().unwrap().len(), 1);
    let misses = s
        .call("GET", "/apps/meta/machines?metadata.role=db", None)
        .await
        .body;
    assert_eq!(misses.as_array().unwrap().len(), 0);

    let bulk = json!({"metadata": {"role": null, "tier": "1"}, "machine_version": "01STALE0000000000000000000"});
    assert_eq!(s.call("PATCH", &md, Some(bulk)).await.status, 412);
    let bulk = json!({"metadata": {"role": null, "tier": "1"}, "machine_version": v});
    assert_eq!(s.call("PUT", &md, Some(bulk)).await.status, 204);
    assert_eq!(s.call("GET", &md, None).await.body, json!({"tier": "1"}));
    assert_eq!(
        s.call("DELETE", &format!("{md}/tier"), None).await.status,
        204
    );
    assert_eq!(s.call("GET", &format!("{md}/tier"), None).await.status, 404);
    assert_eq!(
        s.call(
            "POST",
            &format!("{md}/bad%20key"),
            Some(json!({"value": "x"}))
        )
        .await
        .status,
        400
    );

    assert_eq!(
        s.call("POST", &format!("/apps/meta/machines/{id}/cordon"), None)
            .await
            .status,
        200
    );
    assert_eq!(s.machine("meta", id).await["cordoned"], true);
    assert_eq!(
        s.call("POST", &format!("/apps/meta/machines/{id}/uncordon"), None)
            .await
            .status,
        200
    );
    assert_eq!(s.machine("meta", id).await["cordoned"], false);
}
