//! Raw volumes (`fstype: raw`): a block device with no filesystem, given to the machine
//! at its mount path (a device node on containerd, the loop device's path on the
//! process driver). Bytes written to it survive a restart, it grows online, and it is
//! snapshotted and restored only while no machine is writing to it. Needs root; the
//! containerd half needs containerd (CI has both).

use serde_json::json;

use crate::harness::{stdout, TestServer};

async fn sh(s: &TestServer, app: &str, id: &str, script: &str) -> String {
    let out = s.exec(app, id, &["/bin/sh", "-c", script]).await;
    assert_eq!(out["exit_code"], 0, "{script}: {out}");
    out["stdout"].as_str().unwrap_or_default().to_string()
}

/// Writes 4 MiB of random bytes at the start of the device at `dev`; answers their md5.
const WRITE: &str = "head -c 4194304 /dev/urandom > /tmp/r && dd if=/tmp/r of=DEV bs=1048576 conv=fsync 2>/dev/null && md5sum < /tmp/r";
const READ: &str = "head -c 4194304 DEV | md5sum";

#[tokio::test]
async fn a_raw_volume_is_a_block_device_that_keeps_its_bytes() {
    if !crate::volumes::can_run() {
        return;
    }
    let s = TestServer::start_with(&["--driver", "process"]).await;
    s.create_app("rawapp").await;
    let out = s.cli(&[
        "volumes",
        "create",
        "blocks",
        "-s",
        "1",
        "--fs-type",
        "raw",
        "-a",
        "rawapp",
        "-y",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let v = &made[0];
    let vol = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["fstype"], "raw", "{v}");
    assert_eq!(
        v["encrypted"], false,
        "a block device is not encrypted here: {v}"
    );
    let shown = s
        .call("GET", &format!("/apps/rawapp/volumes/{vol}"), None)
        .await;
    assert_eq!(
        shown.body["blocks"], 262_144,
        "1 GB of 4 KiB blocks: {shown:?}"
    );

    let m = s
        .create_machine(
            "rawapp",
            "exec sleep 600",
            json!({"mounts": [{"volume": vol, "path": "/data"}]}),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    s.wait_state("rawapp", &id, "started").await;
    let size = sh(&s, "rawapp", &id, "blockdev --getsize64 data").await;
    assert_eq!(size.trim(), "1073741824", "a 1 GB block device at data");
    let sum = sh(&s, "rawapp", &id, &WRITE.replace("DEV", "data")).await;

    // It cannot be frozen, so no snapshot while the machine may be writing.
    let r = s
        .call(
            "POST",
            &format!("/apps/rawapp/volumes/{vol}/snapshots"),
            None,
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("stop the machine"), "{r:?}");

    // Grown online: the device is larger under the running machine.
    let r = s
        .call(
            "PUT",
            &format!("/apps/rawapp/volumes/{vol}/extend"),
            Some(json!({"size_gb": 2})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["needs_restart"], false, "{r:?}");
    let size = sh(&s, "rawapp", &id, "blockdev --getsize64 data").await;
    assert_eq!(size.trim(), "2147483648");

    let r = s
        .call("POST", &format!("/apps/rawapp/machines/{id}/stop"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state("rawapp", &id, "stopped").await;
    let r = s
        .call(
            "POST",
            &format!("/apps/rawapp/volumes/{vol}/snapshots"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "stopped, it can be snapshotted: {r:?}");
    let snap = r.body["id"].as_str().unwrap().to_string();
    s.call("POST", &format!("/apps/rawapp/machines/{id}/start"), None)
        .await;
    s.wait_state("rawapp", &id, "started").await;
    assert_eq!(
        sh(&s, "rawapp", &id, &READ.replace("DEV", "data")).await,
        sum
    );

    // Restored as raw (not as ext4): the same bytes.
    let r = s
        .call(
            "POST",
            "/apps/rawapp/volumes",
            Some(json!({"name": "back", "size_gb": 2, "snapshot_id": snap})),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("fstype raw"), "{r:?}");
    let r = s
        .call(
            "POST",
            "/apps/rawapp/volumes",
            Some(json!({"name": "back", "size_gb": 2, "snapshot_id": snap, "fstype": "raw"})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let back = r.body["id"].as_str().unwrap().to_string();
    let m = s
        .create_machine(
            "rawapp",
            "exec sleep 600",
            json!({"mounts": [{"volume": back, "path": "/disk"}]}),
        )
        .await;
    let other = m["id"].as_str().unwrap().to_string();
    s.wait_state("rawapp", &other, "started").await;
    assert_eq!(
        sh(&s, "rawapp", &other, &READ.replace("DEV", "disk")).await,
        sum
    );

    let r = s
        .call(
            "POST",
            "/apps/rawapp/volumes",
            Some(json!({"name": "bad", "fstype": "xfs"})),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("ext4 (the default) or raw"), "{r:?}");
}

/// On containerd the machine sees a device node at the mount path, and only that
/// device is allowed to it.
#[tokio::test]
async fn a_containerd_machine_gets_a_raw_volume_as_a_device_node() {
    use crate::containerd::{run, setup};
    let Some((_registry, s, image)) = setup("craw").await else {
        return;
    };
    let r = s
        .call(
            "POST",
            "/apps/craw/volumes",
            Some(json!({"name": "blocks", "size_gb": 1, "fstype": "raw"})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let vol = r.body["id"].as_str().unwrap().to_string();
    let config = json!({"image": image, "init": {"exec": ["/bin/sh", "-c", "exec sleep 600"]},
        "mounts": [{"volume": vol, "path": "/dev/blocks"}]});
    let id = run(&s, "craw", config).await;
    s.wait_state("craw", &id, "started").await;
    let kind = crate::containerd::sh(&s, "craw", &id, "ls -l /dev/blocks").await;
    assert!(kind.starts_with('b'), "a block device node: {kind}");
    let sum = crate::containerd::sh(&s, "craw", &id, &WRITE.replace("DEV", "/dev/blocks")).await;
    let r = s
        .call("POST", &format!("/apps/craw/machines/{id}/restart"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state("craw", &id, "started").await;
    assert_eq!(
        crate::containerd::sh(&s, "craw", &id, &READ.replace("DEV", "/dev/blocks")).await,
        sum
    );
}
