//! Volumes in the workflow around them: the upkeep loop growing a volume past its
//! mount's threshold (up to its limit) and taking the daily snapshot of volumes that
//! want one; `machine clone` giving the clone a volume of its own (empty, restored from
//! the last snapshot, or a free one attached); and a fly.toml with `[mounts]` deployed
//! onto a volume made beforehand, scaled to a second machine with a volume of its own,
//! and deployed again onto the same volumes. Needs root; the deploy needs containerd and
//! buildah. CI has them.

use std::path::Path;

use serde_json::{json, Value};

use crate::deploys::{edit, example, ok};
use crate::harness::{stdout, TestServer};

async fn volume(s: &TestServer, app: &str, id: &str) -> Value {
    s.call("GET", &format!("/apps/{app}/volumes/{id}"), None)
        .await
        .body
}

/// The shell of the machine: busybox's `sh` on the process driver, the web example's
/// lone `/bin/busybox` on containerd.
const SH: &[&str] = &["/bin/sh", "-c"];
const BUSYBOX_SH: &[&str] = &["/bin/busybox", "sh", "-c"];

async fn sh_ok(s: &TestServer, app: &str, id: &str, script: &str) -> String {
    sh_in(s, SH, app, id, script).await
}

async fn sh_in(s: &TestServer, shell: &[&str], app: &str, id: &str, script: &str) -> String {
    let mut argv = shell.to_vec();
    argv.push(script);
    let out = s.exec(app, id, &argv).await;
    assert_eq!(out["exit_code"], 0, "{script}: {out}");
    out["stdout"].as_str().unwrap_or_default().to_string()
}

/// KiB of the filesystem at `path` inside the machine, as `df -Pk` counts them.
async fn df_total_kib(s: &TestServer, shell: &[&str], app: &str, id: &str, path: &str) -> u64 {
    let out = sh_in(s, shell, app, id, &format!("df -Pk {path}")).await;
    let line = out.lines().nth(1).unwrap_or_default().to_string();
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("df: {out}"))
}

#[tokio::test]
async fn upkeep_grows_volumes_past_their_threshold_and_snapshots_them_daily() {
    if !crate::volumes::can_run() {
        return;
    }
    let s =
        TestServer::start_with(&["--driver", "process", "--volume-upkeep-interval", "1s"]).await;
    s.create_app("upkeep").await;
    let create = |body: Value| {
        let s = &s;
        async move {
            let r = s.call("POST", "/apps/upkeep/volumes", Some(body)).await;
            assert_eq!(r.status, 200, "{r:?}");
            r.body["id"].as_str().unwrap().to_string()
        }
    };
    let grows = create(json!({"name": "data", "size_gb": 1})).await;
    let unsnapped =
        create(json!({"name": "spare", "size_gb": 1, "auto_backup_enabled": false})).await;
    let m = s
        .create_machine(
            "upkeep",
            "exec sleep 600",
            json!({"mounts": [{"volume": grows, "path": "/data",
                "extend_threshold_percent": 20, "add_size_gb": 1, "size_gb_limit": 2}]}),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    s.wait_state("upkeep", &id, "started").await;
    sh_ok(
        &s,
        "upkeep",
        &id,
        "echo marker > data/marker && head -c 209715200 /dev/zero > data/fill && sync",
    )
    .await;

    // Past 20% of 1 GB it grows by 1 GB, to its 2 GB limit and no further.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while volume(&s, "upkeep", &grows).await["size_gb"] != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "not grown: {}",
            s.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // The filesystem grows under the running machine (here, once the writer lets go:
    // this host's root cannot resize a mounted ext4, so it is grown unmounted).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let kib = df_total_kib(&s, SH, "upkeep", &id, "data/.").await;
        if kib > 1900 << 10 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the machine sees 2 GB without a restart: {kib} KiB\n{}",
            s.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    sh_ok(
        &s,
        "upkeep",
        &id,
        "head -c 262144000 /dev/zero > data/more && sync",
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        volume(&s, "upkeep", &grows).await["size_gb"],
        2,
        "held at size_gb_limit"
    );
    // The growth is one of the machine's events, saying from and to what.
    let events = s
        .call("GET", &format!("/apps/upkeep/machines/{id}/events"), None)
        .await
        .body;
    let grown: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "volume_extend")
        .collect();
    assert_eq!(grown.len(), 1, "one growth: {events}");
    assert_eq!(grown[0]["request"]["from_size_gb"], 1, "{events}");
    assert_eq!(grown[0]["request"]["to_size_gb"], 2, "{events}");
    assert_eq!(grown[0]["source"], "flyd");

    // The daily snapshot, for the volume that wants one only.
    let snaps = |v: String| {
        let s = &s;
        async move {
            s.call("GET", &format!("/apps/upkeep/volumes/{v}/snapshots"), None)
                .await
                .body
        }
    };
    let listed = snaps(grows.clone()).await;
    assert_eq!(listed[0]["type"], "BACKUP_TYPE_SCHEDULED", "{listed}");
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "one a day: {listed}"
    );
    assert_eq!(
        snaps(unsnapped.clone()).await,
        json!([]),
        "auto_backup_enabled false"
    );

    // A clone gets a volume of its own: empty by default, the last snapshot's content
    // with --from-snapshot last, or a free volume named with --attach-volume.
    sh_ok(
        &s,
        "upkeep",
        &id,
        "rm data/fill data/more && echo two > data/marker && sync",
    )
    .await;
    let r = s
        .call(
            "POST",
            &format!("/apps/upkeep/volumes/{grows}/snapshots"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body["size"].as_u64().unwrap() < 64 << 20,
        "deleted files' blocks are not stored: {r:?}"
    );
    let clone = |extra: &[&str]| {
        let mut args = vec!["machine", "clone", id.as_str(), "-a", "upkeep", "--json"];
        args.extend_from_slice(extra);
        let out = s.cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m: Value = serde_json::from_str(&stdout(&out)).unwrap();
        let mount = m["config"]["mounts"][0].clone();
        (m["id"].as_str().unwrap().to_string(), mount)
    };
    let (empty, mount) = clone(&[]);
    assert_eq!(mount["path"], "/data");
    assert_ne!(mount["volume"], json!(grows), "never shared");
    let v = volume(&s, "upkeep", mount["volume"].as_str().unwrap()).await;
    assert_eq!(
        (v["name"].clone(), v["size_gb"].clone()),
        (json!("data"), json!(2))
    );
    assert_eq!(v["attached_machine_id"], json!(empty));
    assert_eq!(
        sh_ok(&s, "upkeep", &empty, "cat data/marker 2>/dev/null; true").await,
        ""
    );
    let (restored, _) = clone(&["--from-snapshot", "last"]);
    assert_eq!(
        sh_ok(&s, "upkeep", &restored, "cat data/marker").await,
        "two\n"
    );
    let (attached, mount) = clone(&["--attach-volume", &unsnapped]);
    assert_eq!(mount["volume"], json!(unsnapped));
    assert_eq!(
        volume(&s, "upkeep", &unsnapped).await["attached_machine_id"],
        json!(attached)
    );
    let out = s.cli(&[
        "machine",
        "clone",
        &id,
        "-a",
        "upkeep",
        "--attach-volume",
        &unsnapped,
    ]);
    assert!(
        !out.status.success(),
        "a held volume cannot be attached twice"
    );
    let before = s.call("GET", "/apps/upkeep/volumes", None).await.body;
    let out = s.cli(&[
        "machine",
        "clone",
        &id,
        "-a",
        "upkeep",
        "--from-snapshot",
        "vs_nothere",
    ]);
    assert!(!out.status.success());
    let after = s.call("GET", "/apps/upkeep/volumes", None).await.body;
    assert_eq!(before, after, "a refused clone leaves no volume behind");
}

fn count(s: &TestServer, app: &str) -> Vec<Value> {
    let out = ok(s, Path::new("."), &["volumes", "list", "-a", app, "--json"]);
    serde_json::from_str::<Vec<Value>>(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fly_toml_with_mounts_deploys_onto_volumes_and_keeps_them() {
    if !crate::deploys::can_run() {
        return;
    }
    // The seed's 10 GB volumes, twice: their images are sparse and this test writes a
    // few bytes, so it promises more than a small CI disk has free.
    let s = TestServer::start_with(&[
        "--driver",
        "containerd",
        "--volume-encryption",
        "always",
        "--volume-overcommit",
        "50",
    ])
    .await;
    let (_tmp, dir) = example("web", "vol-web");
    edit(&dir.join("fly.toml"), |t| {
        let t = t.replacen(
            "\nkill_signal",
            "\nprimary_region = \"iad\"\nkill_signal",
            1,
        );
        format!("{t}\n[mounts]\n  source = \"data\"\n  destination = \"/data\"\n")
    });
    ok(&s, &dir, &["apps", "create", "vol-web"]);
    ok(
        &s,
        &dir,
        &[
            "volumes", "create", "data", "--size", "10", "--region", "iad", "-y",
        ],
    );
    let made = count(&s, "vol-web");
    assert_eq!(made.len(), 1);
    let out = ok(&s, &dir, &["deploy"]);
    assert!(out.contains("v1 deployed successfully"), "{out}");
    let machines = crate::deploys::status(&s, "vol-web")["machines"].clone();
    assert_eq!(
        machines.as_array().map(Vec::len),
        Some(1),
        "a group with mounts gets one machine: {machines}"
    );
    let first = machines[0]["id"].as_str().unwrap().to_string();
    let vols = count(&s, "vol-web");
    assert_eq!(
        vols.len(),
        1,
        "the volume made beforehand is used: {vols:?}"
    );
    assert_eq!(vols[0]["attached_machine_id"], json!(first));

    // The seed's check: df -h /data in the machine shows a 10 GB filesystem.
    let df = ok(
        &s,
        &dir,
        &["machine", "exec", &first, "/bin/busybox df -h /data"],
    );
    println!("{df}");
    let kib = df_total_kib(&s, BUSYBOX_SH, "vol-web", &first, "/data").await;
    assert!(
        kib > 9 << 20 && kib <= 10 << 20,
        "a 10 GB filesystem: {kib} KiB\n{df}"
    );
    sh_in(&s, BUSYBOX_SH, "vol-web", &first, "echo one > /data/who").await;

    // Scaling out gives the new machine a volume of its own.
    ok(&s, &dir, &["scale", "count", "2", "-y"]);
    let vols = count(&s, "vol-web");
    assert_eq!(vols.len(), 2, "{vols:?}");
    assert!(
        vols.iter()
            .all(|v| v["name"] == "data" && v["attached_machine_id"].is_string()),
        "{vols:?}"
    );
    let ids = |v: &[Value]| {
        let mut ids: Vec<String> = v
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let before = ids(&vols);
    let shown = ok(&s, &dir, &["scale", "show"]);
    assert!(
        shown.contains("VOLUMES") && shown.contains("2 (20 GB)"),
        "{shown}"
    );
    let shown = ok(&s, &dir, &["status"]);
    assert!(before.iter().all(|v| shown.contains(v.as_str())), "{shown}");
    let doctor = stdout(&s.cli_in(&dir, &["doctor"]));
    assert!(
        doctor.contains(
            "volume snapshots: every volume is snapshotted daily, each snapshot kept 5 days"
        ),
        "{doctor}"
    );
    assert!(
        doctor.contains("PASS  volume encryption: no unencrypted volume"),
        "{doctor}"
    );
    assert!(vols.iter().all(|v| v["encrypted"] == true), "{vols:?}");

    // A second deploy keeps each machine on its volume, with its data.
    edit(&dir.join("fly.toml"), |t| {
        t.replace("GREETING = \"hello\"", "GREETING = \"again\"")
    });
    let out = ok(&s, &dir, &["deploy"]);
    assert!(out.contains("v2 deployed successfully"), "{out}");
    let vols = count(&s, "vol-web");
    assert_eq!(ids(&vols), before, "no volume made or lost: {vols:?}");
    assert_eq!(
        sh_in(&s, BUSYBOX_SH, "vol-web", &first, "cat /data/who").await,
        "one\n"
    );
}
