//! Volumes on real loop-mounted ext4: the Volumes API's shapes and refusals, a machine
//! writing to its volume, the data surviving stop/start, update and a `kill -9` of the
//! server, growing a volume under a running machine, and destroying it only once no
//! machine holds it. Needs root (loop devices and mount); CI runs as root.

use serde_json::{json, Value};

use crate::harness::{stdout, Res, TestServer};

pub(crate) fn can_run() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "volume tests need root in CI"
    );
    eprintln!("skipping volume test: volumes need root (loop devices and mount)");
    false
}

async fn create_volume(s: &TestServer, app: &str, body: Value) -> Res {
    s.call("POST", &format!("/apps/{app}/volumes"), Some(body))
        .await
}

async fn volume_count(s: &TestServer, app: &str) -> usize {
    let r = s.call("GET", &format!("/apps/{app}/volumes"), None).await;
    r.body.as_array().map_or(0, Vec::len)
}

async fn stdout_of(s: &TestServer, app: &str, id: &str, script: &str) -> String {
    let out = s.exec(app, id, &["/bin/sh", "-c", script]).await;
    assert_eq!(out["exit_code"], 0, "{script}: {out}");
    out["stdout"].as_str().unwrap_or_default().to_string()
}

/// Whether the volume's image on the host holds `text` as plain bytes.
fn image_holds(s: &TestServer, vol: &str, text: &str) -> bool {
    let image = s.data_dir().join("volumes").join(vol).join("disk.img");
    let out = std::process::Command::new("grep")
        .args(["-a", "-q", "-F", text])
        .arg(&image)
        .status()
        .expect("grep");
    out.success()
}

/// Total KiB of the filesystem at `path` as `df` inside the machine sees it.
async fn df_kib(s: &TestServer, app: &str, id: &str) -> u64 {
    let out = stdout_of(s, app, id, "df -Pk data/.").await;
    let line = out.lines().nth(1).unwrap_or_default().to_string();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn volumes_are_real_filesystems_that_keep_a_machines_data() {
    if !can_run() {
        return;
    }
    // Encrypted even though this kernel may lack AES in hardware (`auto` would not).
    let mut s =
        TestServer::start_with(&["--driver", "process", "--volume-encryption", "always"]).await;
    s.create_app("vols").await;

    // Created with Fly's shape and the filesystem's real block counts.
    let r = create_volume(&s, "vols", json!({"name": "data", "size_gb": 1})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let vol = r.body["id"].as_str().unwrap().to_string();
    assert!(vol.starts_with("vol_") && vol.len() == 20, "{vol}");
    assert_eq!(r.body["size_gb"], 1);
    assert_eq!(r.body["state"], "created");
    assert_eq!(r.body["fstype"], "ext4");
    assert_eq!(r.body["snapshot_retention"], 5);
    assert_eq!(r.body["zone"].as_str().unwrap().len(), 4);
    let bytes = r.body["blocks"].as_u64().unwrap() * r.body["block_size"].as_u64().unwrap();
    assert!(
        bytes > 900 << 20 && bytes <= 1 << 30,
        "a 1 GB filesystem: {bytes} bytes"
    );

    // Refusals, with nothing created.
    for (body, want) in [
        (json!({"name": "d", "size_gb": 0}), "1 to 500 GB"),
        (json!({"name": "d", "size_gb": 501}), "1 to 500 GB"),
        (json!({"name": "d", "size_gb": "ten"}), "invalid type"),
        (json!({"name": "Data"}), "invalid volume name"),
        (json!({"name": "my-data"}), "invalid volume name"),
        (json!({"size_gb": 1}), "name is required"),
        (json!({"name": "d", "fstype": "xfs"}), "fstype"),
        (
            json!({"name": "d", "snapshot_retention": 0}),
            "snapshot_retention",
        ),
        (
            json!({"name": "d", "region": "not a region"}),
            "invalid region",
        ),
    ] {
        let r = create_volume(&s, "vols", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert!(r.error().contains(want), "{body}: {want:?} in {r:?}");
    }
    assert_eq!(volume_count(&s, "vols").await, 1, "nothing else was made");

    // A machine writes to its volume.
    let mount = json!({"mounts": [{"volume": vol, "path": "/data"}]});
    let m = s
        .create_machine(
            "vols",
            "echo hello > data/hello; exec sleep 600",
            mount.clone(),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    s.wait_state("vols", &id, "started").await;
    assert_eq!(
        stdout_of(&s, "vols", &id, "cat data/hello").await,
        "hello\n"
    );
    let sum = stdout_of(
        &s,
        "vols",
        &id,
        "head -c 4194304 /dev/urandom > data/blob && sync && md5sum < data/blob",
    )
    .await;
    let v = s
        .call("GET", &format!("/apps/vols/volumes/{vol}"), None)
        .await;
    assert_eq!(v.body["attached_machine_id"], id.as_str());

    // Encrypted at rest: what the machine writes is not in the image as written; on a
    // volume made without encryption it is (so the check can fail).
    assert_eq!(v.body["encrypted"], true, "{v:?}");
    let marker = "hangar-plaintext-marker-7f3c19";
    stdout_of(
        &s,
        "vols",
        &id,
        &format!("echo {marker} > data/plain && sync"),
    )
    .await;
    assert!(
        !image_holds(&s, &vol, marker),
        "the volume's image holds plaintext"
    );
    let r = create_volume(
        &s,
        "vols",
        json!({"name": "plain", "size_gb": 1, "encrypted": false}),
    )
    .await;
    assert_eq!(r.body["encrypted"], false, "{r:?}");
    let plain_vol = r.body["id"].as_str().unwrap().to_string();
    let m = s
        .create_machine(
            "vols",
            &format!("echo {marker} > data/plain && sync && exec sleep 600"),
            json!({"mounts": [{"volume": plain_vol, "path": "/data"}]}),
        )
        .await;
    let plain_machine = m["id"].as_str().unwrap().to_string();
    s.wait_state("vols", &plain_machine, "started").await;
    stdout_of(&s, "vols", &plain_machine, "sync").await;
    assert!(
        image_holds(&s, &plain_vol, marker),
        "an unencrypted image holds it"
    );
    s.call(
        "DELETE",
        &format!("/apps/vols/machines/{plain_machine}?force=true"),
        None,
    )
    .await;

    // Mounts that cannot be.
    let other = create_volume(
        &s,
        "vols",
        json!({"name": "data", "region": "ams", "size_gb": 1}),
    )
    .await;
    let other = other.body["id"].as_str().unwrap().to_string();
    let machine_with = |mounts: Value| json!({"config": {"image": "busybox", "init": {"exec": ["sleep", "60"]}, "mounts": mounts}});
    for (mounts, status, want) in [
        (
            json!([{"volume": vol, "path": "/data"}]),
            409,
            "attached to machine",
        ),
        (json!([{"volume": vol, "path": "/"}]), 400, "other than /"),
        (
            json!([{"volume": vol, "path": "/a"}, {"volume": other, "path": "/b"}]),
            400,
            "at most one",
        ),
        (
            json!([{"volume": "vol_nope", "path": "/data"}]),
            400,
            "volume not found",
        ),
        (
            json!([{"volume": other, "path": "/data"}]),
            400,
            "is in region ams",
        ),
    ] {
        let r = s
            .call(
                "POST",
                "/apps/vols/machines",
                Some(machine_with(mounts.clone())),
            )
            .await;
        assert_eq!(r.status, status, "{mounts}: {r:?}");
        assert!(r.error().contains(want), "{mounts}: {want:?} in {r:?}");
    }

    // Destroying a volume a machine holds is refused.
    let r = s
        .call("DELETE", &format!("/apps/vols/volumes/{vol}"), None)
        .await;
    assert_eq!(r.status, 409, "{r:?}");

    // Grown under the running machine: df inside sees it, no restart.
    let before = df_kib(&s, "vols", &id).await;
    let r = s
        .call(
            "PUT",
            &format!("/apps/vols/volumes/{vol}/extend"),
            Some(json!({"size_gb": 2})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["volume"]["size_gb"], 2);
    if r.body["needs_restart"] == true {
        // The host could not grow it mounted: it grows at the machine's next start.
        let r = s
            .call("POST", &format!("/apps/vols/machines/{id}/restart"), None)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        s.wait_state("vols", &id, "started").await;
    }
    let after = df_kib(&s, "vols", &id).await;
    assert!(
        after > before + (900 << 10),
        "df {before} KiB -> {after} KiB"
    );
    let r = s
        .call(
            "PUT",
            &format!("/apps/vols/volumes/{vol}/extend"),
            Some(json!({"size_gb": 1})),
        )
        .await;
    assert_eq!(r.status, 400, "shrinking: {r:?}");
    assert!(r.error().contains("only grow"), "{r:?}");

    // The data outlives stop/start, an update and a crash of the server.
    let r = s
        .call("POST", &format!("/apps/vols/machines/{id}/stop"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state("vols", &id, "stopped").await;
    let r = s
        .call("POST", &format!("/apps/vols/machines/{id}/start"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state("vols", &id, "started").await;
    assert_eq!(stdout_of(&s, "vols", &id, "md5sum < data/blob").await, sum);
    let mut config = s.machine("vols", &id).await["config"].clone();
    config["env"] = json!({"AFTER": "update"});
    config["mounts"] = json!([{"path": "/data", "name": "data"}]);
    let r = s
        .call(
            "POST",
            &format!("/apps/vols/machines/{id}"),
            Some(json!({"config": config})),
        )
        .await;
    assert_eq!(
        r.status, 200,
        "an update naming the mount by name keeps its volume: {r:?}"
    );
    assert_eq!(r.body["config"]["mounts"][0]["volume"], vol.as_str());
    s.wait_state("vols", &id, "started").await;
    assert_eq!(stdout_of(&s, "vols", &id, "md5sum < data/blob").await, sum);
    s.kill9();
    // As after a reboot: the filesystem unmounted, so the kernel no longer has its key
    // and the restarted server must give it again.
    let fs = s.data_dir().join("volumes").join(&vol).join("fs");
    let umounted = std::process::Command::new("umount")
        .arg(&fs)
        .status()
        .expect("umount");
    assert!(
        umounted.success(),
        "nothing holds the volume while its server is down"
    );
    s.spawn().await;
    s.wait_state("vols", &id, "started").await;
    // A host's own agent gets the keys as it registers, moments after its start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = s
            .exec("vols", &id, &["/bin/sh", "-c", "md5sum < data/blob"])
            .await;
        if out["stdout"] == json!(sum) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "unreadable after the restart: {out}\n{}",
            s.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // A snapshot is what the volume held when taken: restored into a new volume, it
    // has the blob and not what was written after; a fork has both.
    let r = s
        .call("POST", &format!("/apps/vols/volumes/{vol}/snapshots"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let snap = r.body["id"].as_str().unwrap().to_string();
    assert!(snap.starts_with("vs_"), "{snap}");
    assert_eq!(r.body["type"], "BACKUP_TYPE_ON_DEMAND");
    assert_eq!(r.body["status"], "created");
    assert!(
        r.body["size"].as_u64().unwrap() < 8 << 20,
        "only what was written is stored: {r:?}"
    );
    assert!(
        s.data_dir()
            .join("snapshots")
            .join(&vol)
            .join("chunks")
            .is_dir(),
        "kept under the data dir when no bucket is configured"
    );
    stdout_of(&s, "vols", &id, "echo later > data/after && sync").await;
    let listed = s
        .call("GET", &format!("/apps/vols/volumes/{vol}/snapshots"), None)
        .await;
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1), "{listed:?}");
    let r = create_volume(
        &s,
        "vols",
        json!({"name": "restored", "size_gb": 1, "snapshot_id": snap}),
    )
    .await;
    assert_eq!(r.status, 400, "smaller than the snapshot's volume: {r:?}");
    assert!(r.error().contains("at least 2 GB"), "{r:?}");
    s.create_app("elsewhere").await;
    let r = create_volume(
        &s,
        "elsewhere",
        json!({"name": "stolen", "size_gb": 2, "snapshot_id": snap}),
    )
    .await;
    assert_eq!(r.status, 400, "another app's snapshot: {r:?}");
    assert!(r.error().contains("not found"), "{r:?}");
    let r = create_volume(
        &s,
        "vols",
        json!({"name": "restored", "size_gb": 3, "snapshot_id": snap}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["size_gb"], 3);
    let restored = r.body["id"].as_str().unwrap().to_string();
    let r = create_volume(
        &s,
        "vols",
        json!({"name": "forked", "source_volume_id": vol, "size_gb": 2}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let forked = r.body["id"].as_str().unwrap().to_string();
    for (v, want_after) in [(&restored, false), (&forked, true)] {
        let m = s
            .create_machine(
                "vols",
                "exec sleep 600",
                json!({"mounts": [{"volume": v, "path": "/data"}]}),
            )
            .await;
        let mid = m["id"].as_str().unwrap().to_string();
        s.wait_state("vols", &mid, "started").await;
        assert_eq!(
            stdout_of(&s, "vols", &mid, "md5sum < data/blob").await,
            sum,
            "{v}"
        );
        let after = stdout_of(&s, "vols", &mid, "cat data/after 2>/dev/null; true").await;
        assert_eq!(after == "later\n", want_after, "{v}: {after:?}");
        if v == &restored {
            assert!(df_kib(&s, "vols", &mid).await > 2900 << 10, "grown to 3 GB");
        }
        s.call(
            "DELETE",
            &format!("/apps/vols/machines/{mid}?force=true"),
            None,
        )
        .await;
    }

    // Once its machine is destroyed, the volume is free, then destroyed and kept a day.
    let r = s
        .call(
            "DELETE",
            &format!("/apps/vols/machines/{id}?force=true"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state("vols", &id, "destroyed").await;
    let v = s
        .call("GET", &format!("/apps/vols/volumes/{vol}"), None)
        .await;
    assert!(v.body.get("attached_machine_id").is_none(), "{v:?}");
    let r = s
        .call("DELETE", &format!("/apps/vols/volumes/{vol}"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["state"], "pending_destroy");
    assert!(
        !s.data_dir().join("volumes").join(&vol).exists(),
        "blocks removed"
    );
    let listed = s.call("GET", "/apps/vols/volumes", None).await.body;
    assert!(!listed.to_string().contains(&vol), "{listed}");
    let all = s
        .call("GET", "/apps/vols/volumes?include_deleted=true", None)
        .await
        .body;
    assert!(all.to_string().contains(&vol), "{all}");

    // The CLI shows them as flyctl does.
    let out = s.cli(&[
        "volumes", "create", "cli_vol", "-s", "1", "-a", "vols", "-y",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.cli(&["volumes", "list", "-a", "vols", "--all"]);
    let text = stdout(&out);
    assert!(
        text.contains("ATTACHED VM") && text.contains("cli_vol"),
        "{text}"
    );
    assert!(text.contains("pending_destroy"), "{text}");
    let out = s.cli(&["volumes", "snapshots", "list", &vol, "-a", "vols"]);
    let text = stdout(&out);
    assert!(
        text.contains(&snap) && text.contains("Total stored size"),
        "{text}"
    );
}

/// On containerd the volume is bind-mounted at its path; the root filesystem resets
/// with a new version, the volume does not; and growing it shows inside the machine.
#[tokio::test]
async fn a_containerd_machine_keeps_its_volume_across_updates() {
    use crate::containerd::{run, setup, sh};
    let Some((_registry, s, image)) = setup("cvols").await else {
        return;
    };
    let r = create_volume(&s, "cvols", json!({"name": "data", "size_gb": 1})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let vol = r.body["id"].as_str().unwrap().to_string();
    let config = json!({"image": image, "init": {"exec": ["/bin/sh", "-c", "exec sleep 600"]},
        "mounts": [{"volume": vol, "path": "/data"}]});
    let id = run(&s, "cvols", config.clone()).await;
    s.wait_state("cvols", &id, "started").await;
    sh(
        &s,
        "cvols",
        &id,
        "echo kept > /data/note; echo lost > /root-note",
    )
    .await;
    let mounts = sh(&s, "cvols", &id, "grep ' /data ' /proc/mounts").await;
    assert!(
        mounts.contains("ext4"),
        "an ext4 filesystem at /data: {mounts}"
    );
    let blocks = |df: String| -> u64 {
        let line = df.lines().nth(1).unwrap_or_default().to_string();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let before = blocks(sh(&s, "cvols", &id, "df -k /data").await);

    let mut updated = config.clone();
    updated["env"] = json!({"V": "2"});
    let r = s
        .call(
            "POST",
            &format!("/apps/cvols/machines/{id}"),
            Some(json!({"config": updated})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state("cvols", &id, "started").await;
    assert_eq!(sh(&s, "cvols", &id, "cat /data/note").await, "kept\n");
    assert_eq!(
        sh(&s, "cvols", &id, "cat /root-note 2>/dev/null").await,
        "",
        "the rootfs resets"
    );

    let r = s
        .call(
            "PUT",
            &format!("/apps/cvols/volumes/{vol}/extend"),
            Some(json!({"size_gb": 2})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    if r.body["needs_restart"] == true {
        let r = s
            .call("POST", &format!("/apps/cvols/machines/{id}/restart"), None)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        s.wait_state("cvols", &id, "started").await;
    }
    let after = blocks(sh(&s, "cvols", &id, "df -k /data").await);
    assert!(
        after > before + (900 << 10),
        "df {before} KiB -> {after} KiB"
    );
    assert_eq!(sh(&s, "cvols", &id, "cat /data/note").await, "kept\n");
}
