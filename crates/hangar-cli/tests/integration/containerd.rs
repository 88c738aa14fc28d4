//! Machines from OCI images on real containerd, pulled from a real registry: the image
//! config merged with `init` overrides, Fly's environment, exec and ps, stop signal then
//! SIGKILL, suspend→start keeping memory, restart on crash, adoption after a server
//! crash, logs, and bad images refused at create leaving nothing behind.
//!
//! These need root, containerd, runc, docker-registry and busybox-static; CI installs
//! them. Elsewhere each test says why it skips.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{eventually, stdout, TestServer};
use hangar_testkit::{containerd_available, TestRegistry};

/// Whether this host can run the containerd tests; says why not. CI installs all they
/// need, so there a skip is a failure.
fn can_run() -> bool {
    match containerd_available() {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "containerd tests cannot run in CI: {why}"
            );
            eprintln!("skipping containerd test: {why}");
            false
        }
    }
}

pub(crate) async fn setup(app: &str) -> Option<(TestRegistry, TestServer, String)> {
    setup_with(app, &[]).await
}

/// A containerd server with extra `hangar server` arguments, an app, and a busybox image.
pub(crate) async fn setup_with(
    app: &str,
    args: &[&str],
) -> Option<(TestRegistry, TestServer, String)> {
    if !can_run() {
        return None;
    }
    let registry = TestRegistry::start();
    let image = registry.push_busybox("hangar/busybox", "1").await;
    let mut all = vec!["--driver", "containerd"];
    all.extend_from_slice(args);
    let s = TestServer::start_with(&all).await;
    s.create_app(app).await;
    Some((registry, s, image))
}

pub(crate) async fn run(s: &TestServer, app: &str, config: serde_json::Value) -> String {
    let r = s
        .call(
            "POST",
            &format!("/apps/{app}/machines"),
            Some(json!({"config": config})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}\n{}", s.log());
    r.body["id"].as_str().unwrap().to_string()
}

pub(crate) async fn sh(s: &TestServer, app: &str, id: &str, script: &str) -> String {
    let out = s.exec(app, id, &["/bin/sh", "-c", script]).await;
    out["stdout"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn images_run_with_fly_environment_exec_ps_and_logs() {
    let Some((_reg, s, image)) = setup("oci").await else {
        return;
    };
    let id = run(
        &s,
        "oci",
        json!({"image": image, "env": {"GREETING": "hi"}}),
    )
    .await;
    s.wait_state("oci", &id, "started").await;
    let env = sh(&s, "oci", &id, "env").await;
    for kv in [
        "FLY_APP_NAME=oci".to_string(),
        format!("FLY_MACHINE_ID={id}"),
        "FLY_REGION=ord".into(),
        "GREETING=hi".into(),
        "IMAGE_VAR=from-image".into(),
        "PORT=8080".into(),
    ] {
        assert!(env.lines().any(|l| l == kv), "missing {kv} in {env}");
    }
    let image_ref = env
        .lines()
        .find(|l| l.starts_with("FLY_IMAGE_REF="))
        .unwrap();
    assert!(
        image_ref.contains(&format!("{image}@sha256:")),
        "resolved reference: {image_ref}"
    );
    assert_eq!(sh(&s, "oci", &id, "hostname").await.trim(), id);

    let ps = s
        .call("GET", &format!("/apps/oci/machines/{id}/ps"), None)
        .await
        .body;
    assert!(
        ps.as_array()
            .unwrap()
            .iter()
            .any(|p| p["command"] == "sleep 3600"),
        "{ps}"
    );
    let logs = eventually(10, "the image's output in the logs", || async {
        let o = s.cli(&["logs", "-a", "oci", "--no-tail"]);
        let text = stdout(&o);
        text.contains("hello from image").then_some(text)
    })
    .await;
    assert!(
        logs.contains(&format!("app[{id}] ord [info] hello from image")),
        "{logs}"
    );

    // init overrides replace the image's command.
    let other = run(&s, "oci", json!({"image": image, "init": {"cmd": ["/bin/sh", "-c", "echo overridden; exec sleep 3600"]}})).await;
    s.wait_state("oci", &other, "started").await;
    // The shell execs sleep a moment after the machine has started.
    eventually(10, "the overriding command to run", || async {
        let ps = s
            .call("GET", &format!("/apps/oci/machines/{other}/ps"), None)
            .await
            .body;
        (ps[0]["command"] == "sleep 3600").then_some(())
    })
    .await;
    eventually(10, "override output", || async {
        stdout(&s.cli(&["logs", "-a", "oci", "--machine", &other, "--no-tail"]))
            .contains("overridden")
            .then_some(())
    })
    .await;

    // A machine's last words before it exits are kept, though its container goes once
    // it has exited; and it starts again on a fresh root filesystem.
    let brief = run(&s, "oci", json!({"image": image, "restart": {"policy": "no"},
        "init": {"cmd": ["/bin/sh", "-c", "ls /scratch 2>/dev/null; touch /scratch; seq 1 20; echo last words; exit 3"]}})).await;
    s.wait_state("oci", &brief, "stopped").await;
    let logs = stdout(&s.cli(&["logs", "-a", "oci", "--machine", &brief, "--no-tail"]));
    assert!(
        logs.contains("last words") && logs.contains("] 20\n"),
        "{logs}"
    );
    s.call("POST", &format!("/apps/oci/machines/{brief}/start"), None)
        .await;
    s.wait_state("oci", &brief, "stopped").await;
    let logs = stdout(&s.cli(&["logs", "-a", "oci", "--machine", &brief, "--no-tail"]));
    assert_eq!(logs.matches("last words").count(), 2, "{logs}");
    assert!(
        !logs.contains("/scratch"),
        "a fresh root filesystem: {logs}"
    );
}

#[tokio::test]
async fn lifecycle_stop_suspend_restart_policy() {
    let Some((_reg, s, image)) = setup("life").await else {
        return;
    };
    // Stop: the signal is honoured when handled, SIGKILL follows the timeout otherwise.
    let polite = run(&s, "life", json!({"image": image, "init": {"exec": ["/bin/sh", "-c", "trap 'echo got term; exit 0' TERM; touch /tmp/trapped; while :; do sleep 0.1; done"]}})).await;
    // The init passes the stop signal (SIGINT by default) on, so a process stops on it
    // unless it ignores it.
    let stubborn = run(
        &s,
        "life",
        json!({"image": image, "stop_config": {"timeout": "1s"},
               "init": {"exec": ["/bin/sh", "-c", "trap '' INT TERM; touch /tmp/trapped; while :; do sleep 0.1; done"]}}),
    )
    .await;
    s.wait_state("life", &polite, "started").await;
    s.wait_state("life", &stubborn, "started").await;
    // A signal sent before the shell set its trap would meet the default action.
    for id in [&polite, &stubborn] {
        eventually(10, "the shell's trap to be set", || async {
            sh(&s, "life", id, "test -e /tmp/trapped && echo yes")
                .await
                .contains("yes")
                .then_some(())
        })
        .await;
    }
    s.call(
        "POST",
        &format!("/apps/life/machines/{polite}/stop"),
        Some(json!({"signal": "SIGTERM"})),
    )
    .await;
    s.wait_state("life", &polite, "stopped").await;
    let exit = s
        .events("life", &polite)
        .await
        .into_iter()
        .find(|e| e["type"] == "exit")
        .unwrap();
    assert_eq!(exit["request"]["exit_event"]["exit_code"], 0, "{exit}");
    let t = Instant::now();
    s.call(
        "POST",
        &format!("/apps/life/machines/{stubborn}/stop"),
        None,
    )
    .await;
    s.wait_state("life", &stubborn, "stopped").await;
    assert!(t.elapsed() >= Duration::from_millis(900));
    let exit = s
        .events("life", &stubborn)
        .await
        .into_iter()
        .find(|e| e["type"] == "exit")
        .unwrap();
    assert_eq!(exit["request"]["exit_event"]["signal"], 9, "{exit}");

    // Suspend keeps memory: a counter in the shell's memory goes on from where it was.
    let counter = run(&s, "life", json!({"image": image, "init": {"exec": ["/bin/sh", "-c",
        "i=0; while :; do i=$((i+1)); echo $i > /tmp/c.tmp; mv /tmp/c.tmp /tmp/count; sleep 0.05; done"]}})).await;
    s.wait_state("life", &counter, "started").await;
    let read = || async {
        sh(&s, "life", &counter, "cat /tmp/count")
            .await
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    eventually(10, "counter", || async { (read().await > 5).then_some(()) }).await;
    let pid = s.main_pid("life", &counter).await;
    s.call(
        "POST",
        &format!("/apps/life/machines/{counter}/suspend"),
        None,
    )
    .await;
    s.wait_state("life", &counter, "suspended").await;
    let r = s
        .call(
            "POST",
            &format!("/apps/life/machines/{counter}/exec"),
            Some(json!({"command": ["true"]})),
        )
        .await;
    assert_eq!(r.status, 412, "a suspended machine runs nothing");
    s.call(
        "POST",
        &format!("/apps/life/machines/{counter}/start"),
        None,
    )
    .await;
    s.wait_state("life", &counter, "started").await;
    let resumed = read().await;
    assert!(resumed > 5, "memory kept: {resumed}");
    // The same main process is still there (a child of the loop may be listed first
    // for an instant while the main one forks).
    eventually(
        5,
        "the same main process, resumed, not rebooted",
        || async {
            let ps = s
                .call("GET", &format!("/apps/life/machines/{counter}/ps"), None)
                .await
                .body;
            ps.as_array()?
                .iter()
                .any(|p| p["pid"].as_i64() == Some(pid))
                .then_some(())
        },
    )
    .await;

    // Restart on crash, per policy.
    let crash = run(
        &s,
        "life",
        json!({"image": image, "init": {"exec": ["/bin/sh", "-c", "exit 3"]},
        "restart": {"policy": "on-failure", "max_retries": 1}}),
    )
    .await;
    let exits = eventually(15, "two failed runs", || async {
        let e: Vec<_> = s
            .events("life", &crash)
            .await
            .into_iter()
            .filter(|e| e["type"] == "exit")
            .collect();
        (e.len() >= 2 && e[0]["request"]["exit_event"]["restarting"] == false).then_some(e)
    })
    .await;
    assert_eq!(exits[0]["request"]["exit_event"]["exit_code"], 3);
    assert_eq!(s.machine("life", &crash).await["state"], "stopped");

    // Destroy removes the container.
    let r = s
        .call(
            "DELETE",
            &format!("/apps/life/machines/{counter}?force=true"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let ctr = std::process::Command::new("ctr")
        .arg("-a")
        .arg(s.data_dir().join("containerd/containerd.sock"))
        .args(["-n", "hangar", "containers", "ls", "-q"])
        .output()
        .unwrap();
    assert!(!stdout(&ctr).contains(&counter), "container removed");
}

#[tokio::test]
async fn server_crash_adopts_running_containers() {
    let Some((_reg, mut s, image)) = setup("crash").await else {
        return;
    };
    let mut machines = Vec::new();
    for _ in 0..3 {
        machines.push(run(&s, "crash", json!({"image": image})).await);
    }
    let mut pids = Vec::new();
    for id in &machines {
        s.wait_state("crash", id, "started").await;
        pids.push(s.main_pid("crash", id).await);
    }
    s.kill9();
    s.spawn().await;
    for (id, pid) in machines.iter().zip(pids) {
        assert_eq!(s.machine("crash", id).await["state"], "started");
        assert_eq!(s.main_pid("crash", id).await, pid, "adopted, not restarted");
    }
    // containerd dies: the server starts it again and the machines run on.
    let config = s.data_dir().join("containerd/config.toml");
    let killed = std::process::Command::new("pkill")
        .args([
            "-KILL",
            "-f",
            &format!("containerd --config {}", config.display()),
        ])
        .status()
        .unwrap();
    assert!(killed.success(), "containerd was running");
    let first = machines[0].clone();
    let out = eventually(20, "exec after containerd came back", || async {
        let r = s
            .call(
                "POST",
                &format!("/apps/crash/machines/{first}/exec"),
                Some(json!({"command": ["echo", "back"]})),
            )
            .await;
        (r.status == 200).then_some(r.body)
    })
    .await;
    assert_eq!(out["stdout"], "back\n");
    assert_eq!(s.machine("crash", &first).await["state"], "started");
    // A second machine from a cached image starts with the registry gone.
    drop(_reg);
    let id = run(&s, "crash", json!({"image": image})).await;
    s.wait_state("crash", &id, "started").await;
}

#[tokio::test]
async fn bad_images_fail_the_create_and_leave_nothing() {
    let Some((reg, s, image)) = setup("bad").await else {
        return;
    };
    let cases = [
        (
            format!("{}/hangar/missing:1", reg.addr),
            "cannot pull image",
        ),
        (
            "127.0.0.1:1/nothing/here:1".to_string(),
            "cannot pull image",
        ),
        ("UPPER/Case::bad".to_string(), "invalid image reference"),
    ];
    for (img, want) in cases {
        let r = s
            .call(
                "POST",
                "/apps/bad/machines",
                Some(json!({"config": {"image": img}})),
            )
            .await;
        assert_eq!(r.status, 400, "{img}: {r:?}");
        assert!(r.error().contains(want), "{img}: {r:?}");
    }
    let r = s
        .call(
            "POST",
            "/apps/bad/machines",
            Some(json!({"config": {"image": image, "guest": {"memory_mb": 64}}})),
        )
        .await;
    assert_eq!(r.status, 400);
    let list = s
        .call("GET", "/apps/bad/machines?include_deleted=true", None)
        .await
        .body;
    assert_eq!(list.as_array().unwrap().len(), 0, "nothing persisted");
    let ctr = std::process::Command::new("ctr")
        .arg("-a")
        .arg(s.data_dir().join("containerd/containerd.sock"))
        .args(["-n", "hangar", "containers", "ls", "-q"])
        .output()
        .unwrap();
    assert_eq!(stdout(&ctr).trim(), "", "no container left behind");
}

#[tokio::test]
async fn files_are_written_and_oom_kills_reported() {
    let Some((_reg, s, image)) = setup("files").await else {
        return;
    };
    let id = run(
        &s,
        "files",
        json!({"image": image, "files": [
            {"guest_path": "/etc/app/greeting", "raw_value": "aGkgdGhlcmU=", "mode": 384}
        ]}),
    )
    .await;
    s.wait_state("files", &id, "started").await;
    assert_eq!(
        sh(&s, "files", &id, "cat /etc/app/greeting").await,
        "hi there"
    );
    assert!(sh(&s, "files", &id, "ls -l /etc/app/greeting")
        .await
        .starts_with("-rw-------"));
    let r = s
        .call("POST", "/apps/files/machines", Some(json!({"config": {"image": image, "files": [{"guest_path": "/x", "raw_value": "%%%"}]}})))
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("base64"), "{r:?}");

    // A machine that outgrows guest.memory_mb is OOM-killed, and the exit says so.
    let hog = run(
        &s,
        "files",
        json!({"image": image, "guest": {"memory_mb": 128},
        "restart": {"policy": "no"},
        "init": {"exec": ["/bin/sh", "-c", "s=x; while :; do s=\"$s$s\"; done"]}}),
    )
    .await;
    s.wait_state("files", &hog, "stopped").await;
    let exit = s
        .events("files", &hog)
        .await
        .into_iter()
        .find(|e| e["type"] == "exit")
        .unwrap();
    assert_eq!(exit["request"]["exit_event"]["oom_killed"], true, "{exit}");
}

#[tokio::test]
async fn private_registries_take_credentials_from_env_or_docker_config() {
    if !can_run() {
        return;
    }
    let registry = TestRegistry::start_with_auth("alice", "s3cret");
    let image = registry.push_busybox("private/app", "1").await;

    // No credentials: the create fails and says why.
    let anon = TestServer::start_with(&["--driver", "containerd"]).await;
    anon.create_app("priv").await;
    let r = anon
        .call(
            "POST",
            "/apps/priv/machines",
            Some(json!({"config": {"image": image}})),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("cannot pull image"), "{r:?}");
    drop(anon);

    // HANGAR_REGISTRY_AUTH.
    let auth = format!("{}=alice:s3cret", registry.addr);
    let s = TestServer::start_with_env(
        &["--driver", "containerd"],
        &[("HANGAR_REGISTRY_AUTH", &auth)],
    )
    .await;
    s.create_app("priv").await;
    let id = run(&s, "priv", json!({"image": image})).await;
    s.wait_state("priv", &id, "started").await;
    drop(s);

    // The Docker config file.
    let docker = tempfile::tempdir().unwrap();
    let encoded = {
        // base64("alice:s3cret")
        "YWxpY2U6czNjcmV0"
    };
    std::fs::write(
        docker.path().join("config.json"),
        json!({"auths": {registry.addr.clone(): {"auth": encoded}}}).to_string(),
    )
    .unwrap();
    let dir = docker.path().display().to_string();
    let s =
        TestServer::start_with_env(&["--driver", "containerd"], &[("DOCKER_CONFIG", &dir)]).await;
    s.create_app("priv").await;
    let id = run(&s, "priv", json!({"image": image})).await;
    s.wait_state("priv", &id, "started").await;
}

#[tokio::test]
async fn an_existing_containerd_can_be_named_by_socket() {
    let Some((_reg, first, image)) = setup("owner").await else {
        return;
    };
    let socket = first.data_dir().join("containerd/containerd.sock");
    let socket = socket.display().to_string();
    let s =
        TestServer::start_with(&["--driver", "containerd", "--containerd-socket", &socket]).await;
    assert!(
        !s.data_dir().join("containerd/containerd.sock").exists(),
        "no private containerd started"
    );
    s.create_app("guest").await;
    let id = run(&s, "guest", json!({"image": image})).await;
    s.wait_state("guest", &id, "started").await;
    assert_eq!(
        sh(&s, "guest", &id, "echo via shared containerd").await,
        "via shared containerd\n"
    );
    // This server's machines live in the named containerd: clean them up there.
    s.call(
        "DELETE",
        &format!("/apps/guest/machines/{id}?force=true"),
        None,
    )
    .await;
}
