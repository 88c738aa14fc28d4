//! Volume snapshots kept in an S3-compatible bucket (`--snapshot-bucket`, a real
//! `s3s-fs` that checks request signatures): a machine's data snapshotted through the
//! CLI and the API lands in the bucket and not under the data dir, a second snapshot
//! sends only what changed, a restore from the bucket has the data byte for byte, and
//! deleting the app removes the volume's objects. Needs root (volumes); CI has it.

use serde_json::json;

use crate::harness::TestServer;

async fn sh(s: &TestServer, app: &str, id: &str, script: &str) -> String {
    let out = s.exec(app, id, &["/bin/sh", "-c", script]).await;
    assert_eq!(out["exit_code"], 0, "{script}: {out}");
    out["stdout"].as_str().unwrap_or_default().to_string()
}

fn chunks(objects: &[String]) -> usize {
    objects.iter().filter(|o| o.contains("/chunks/")).count()
}

#[tokio::test]
async fn snapshots_go_to_the_bucket_and_restore_from_it() {
    if !crate::volumes::can_run() {
        return;
    }
    hangar_testkit::s3_available().unwrap();
    let bucket = hangar_testkit::TestBucket::start();
    let env = bucket.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = TestServer::start_with_env(
        &[
            "--driver",
            "process",
            "--snapshot-bucket",
            "s3://snapshots/hangar",
            "--snapshot-endpoint",
            &bucket.endpoint,
        ],
        &env,
    )
    .await;
    s.create_app("snaps").await;
    let r = s
        .call(
            "POST",
            "/apps/snaps/volumes",
            Some(json!({"name": "data", "size_gb": 1})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let vol = r.body["id"].as_str().unwrap().to_string();
    let m = s
        .create_machine(
            "snaps",
            "exec sleep 600",
            json!({"mounts": [{"volume": vol, "path": "/data"}]}),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    s.wait_state("snaps", &id, "started").await;
    let sum = sh(
        &s,
        "snaps",
        &id,
        "head -c 3000000 /dev/urandom > data/blob && sync && md5sum < data/blob",
    )
    .await;

    let out = s.cli(&["volumes", "snapshots", "create", &vol, "-a", "snaps"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = s
        .call("GET", &format!("/apps/snaps/volumes/{vol}/snapshots"), None)
        .await;
    let snap = listed.body[0]["id"].as_str().unwrap().to_string();
    let first = bucket.objects(&format!("hangar/{vol}"));
    assert!(
        first.contains(&format!("hangar/{vol}/snapshots/{snap}")),
        "{first:?}"
    );
    assert!(chunks(&first) >= 1, "{first:?}");
    assert!(
        !s.data_dir().join("snapshots").join(&vol).exists(),
        "nothing kept under the data dir"
    );

    // A small change sends a few blocks, not the volume again: none of the first
    // snapshot's objects is written a second time.
    let written = |objects: &[String]| -> Vec<std::time::SystemTime> {
        objects
            .iter()
            .map(|o| {
                std::fs::metadata(bucket.root().join(o))
                    .unwrap()
                    .modified()
                    .unwrap()
            })
            .collect()
    };
    let first_chunks: Vec<String> = first
        .iter()
        .filter(|o| o.contains("/chunks/"))
        .cloned()
        .collect();
    let first_written = written(&first_chunks);
    sh(&s, "snaps", &id, "echo later > data/after && sync").await;
    let r = s
        .call(
            "POST",
            &format!("/apps/snaps/volumes/{vol}/snapshots"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let second = bucket.objects(&format!("hangar/{vol}"));
    assert_eq!(
        written(&first_chunks),
        first_written,
        "unchanged blocks are not sent again"
    );
    let added = chunks(&second) - chunks(&first);
    assert!(
        added < chunks(&first),
        "the second snapshot sent {added} blocks, the first {}",
        chunks(&first)
    );

    // Restored from the bucket: the first snapshot's data, byte for byte.
    let r = s
        .call(
            "POST",
            "/apps/snaps/volumes",
            Some(json!({"name": "restored", "size_gb": 1, "snapshot_id": snap})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let restored = r.body["id"].as_str().unwrap().to_string();
    let m = s
        .create_machine(
            "snaps",
            "exec sleep 600",
            json!({"mounts": [{"volume": restored, "path": "/data"}]}),
        )
        .await;
    let other = m["id"].as_str().unwrap().to_string();
    s.wait_state("snaps", &other, "started").await;
    assert_eq!(sh(&s, "snaps", &other, "md5sum < data/blob").await, sum);
    assert_eq!(
        sh(&s, "snaps", &other, "cat data/after 2>/dev/null; true").await,
        "",
        "written after the snapshot"
    );

    // Deleting the app removes its snapshots' objects.
    for m in [&id, &other] {
        s.call(
            "DELETE",
            &format!("/apps/snaps/machines/{m}?force=true"),
            None,
        )
        .await;
        s.wait_state("snaps", m, "destroyed").await;
    }
    let r = s.call("DELETE", "/apps/snaps", None).await;
    assert!(r.status < 300, "{r:?}");
    let left = bucket.objects(&format!("hangar/{vol}"));
    assert!(left.is_empty(), "left in the bucket: {left:?}");
}
