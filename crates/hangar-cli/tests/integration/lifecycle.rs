//! Every lifecycle path over HTTP: create→started, stop, start, suspend→start, restart,
//! update, destroy, wait, events, restart policy, the runtime
//! environment a machine sees.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{eventually, read_file, TestServer};

const SLEEPER: &str = "exec sleep 300";

#[tokio::test]
async fn create_stop_start_destroy_with_events() {
    let s = TestServer::start().await;
    s.create_app("life").await;
    let m = s.create_machine("life", SLEEPER, json!({})).await;
    let id = m["id"].as_str().unwrap();
    assert_eq!(id.len(), 14);
    assert_eq!(m["state"], "created");
    assert_eq!(m["events"][0]["type"], "launch");
    s.wait_state("life", id, "started").await;

    let r = s
        .call("POST", &format!("/apps/life/machines/{id}/stop"), None)
        .await;
    assert_eq!((r.status, r.body["ok"].as_bool()), (200, Some(true)));
    s.wait_state("life", id, "stopped").await;
    let events = s.events("life", id).await;
    let exit = events
        .iter()
        .find(|e| e["type"] == "exit")
        .expect("exit event");
    assert_eq!(exit["status"], "stopped");
    assert_eq!(exit["request"]["exit_event"]["requested_stop"], true);
    assert!(
        exit["timestamp"].as_i64().unwrap() > 1_600_000_000_000,
        "timestamps are Unix ms"
    );

    let r = s
        .call("POST", &format!("/apps/life/machines/{id}/start"), None)
        .await;
    assert_eq!(
        (r.status, r.body["previous_state"].as_str()),
        (200, Some("stopped"))
    );
    s.wait_state("life", id, "started").await;

    let r = s
        .call("DELETE", &format!("/apps/life/machines/{id}"), None)
        .await;
    assert_eq!(r.status, 412, "a started machine needs force: {r:?}");
    assert!(r.error().contains("force=true"), "{r:?}");
    let r = s
        .call(
            "DELETE",
            &format!("/apps/life/machines/{id}?force=true"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state("life", id, "destroyed").await;
    assert_eq!(s.machine("life", id).await["state"], "destroyed");
    let list = s.call("GET", "/apps/life/machines", None).await.body;
    assert_eq!(list.as_array().unwrap().len(), 0);
    let all = s
        .call("GET", "/apps/life/machines?include_deleted=true", None)
        .await
        .body;
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert!(
        !s.data_dir().join("machines").join(id).exists(),
        "machine files removed"
    );
}

#[tokio::test]
async fn machines_see_fly_runtime_environment() {
    let s = TestServer::start().await;
    s.create_app("envy").await;
    let m = s
        .create_machine(
            "envy",
            SLEEPER,
            json!({"env": {"GREETING": "hi"}, "guest": {"memory_mb": 512}}),
        )
        .await;
    let id = m["id"].as_str().unwrap();
    s.wait_state("envy", id, "started").await;
    let out = s.exec("envy", id, &["/bin/sh", "-c", "env"]).await;
    let env = out["stdout"].as_str().unwrap();
    let has = |kv: &str| assert!(env.lines().any(|l| l == kv), "missing {kv} in:\n{env}");
    has("FLY_APP_NAME=envy");
    has(&format!("FLY_MACHINE_ID={id}"));
    has(&format!("FLY_ALLOC_ID={id}"));
    has("FLY_REGION=ord");
    has("PRIMARY_REGION=ord");
    has("FLY_IMAGE_REF=busybox");
    has(&format!(
        "FLY_MACHINE_VERSION={}",
        m["instance_id"].as_str().unwrap()
    ));
    has("FLY_PROCESS_GROUP=app");
    has("FLY_VM_MEMORY_MB=512");
    has(&format!(
        "FLY_PRIVATE_IP={}",
        m["private_ip"].as_str().unwrap()
    ));
    has("PORT=8080");
    has("GREETING=hi");
    assert!(m["private_ip"].as_str().unwrap().starts_with("fdaa:"));

    let out = s
        .exec(
            "envy",
            id,
            &["/bin/sh", "-c", "echo out; echo err >&2; exit 7"],
        )
        .await;
    assert_eq!(
        (
            out["exit_code"].as_i64(),
            out["stdout"].as_str(),
            out["stderr"].as_str()
        ),
        (Some(7), Some("out\n"), Some("err\n"))
    );
    let r = s
        .call(
            "POST",
            &format!("/apps/envy/machines/{id}/exec"),
            Some(json!({"cmd": "sh -c 'echo legacy cmd'"})),
        )
        .await;
    assert_eq!(r.body["stdout"], "legacy cmd\n");
    let r = s
        .call(
            "POST",
            &format!("/apps/envy/machines/{id}/exec"),
            Some(json!({"command": ["sleep", "5"], "timeout": 1})),
        )
        .await;
    assert_eq!(r.status, 408, "{r:?}");

    let ps = s
        .call("GET", &format!("/apps/envy/machines/{id}/ps"), None)
        .await
        .body;
    assert!(
        ps[0]["command"].as_str().unwrap().contains("sleep 300"),
        "{ps}"
    );
    assert!(ps[0]["rss"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn suspend_then_start_keeps_memory() {
    let s = TestServer::start().await;
    s.create_app("susp").await;
    let script = "i=0; while :; do i=$((i+1)); echo $i > c.tmp; mv c.tmp counter; sleep 0.05; done";
    let m = s.create_machine("susp", script, json!({})).await;
    let id = m["id"].as_str().unwrap();
    s.wait_state("susp", id, "started").await;
    let counter = s
        .data_dir()
        .join("machines")
        .join(id)
        .join("rootfs")
        .join("counter");
    let read = || read_file(&counter).trim().parse::<u64>().unwrap_or(0);
    eventually(10, "counter to reach 5", || async {
        (read() >= 5).then_some(())
    })
    .await;
    let pid = s.main_pid("susp", id).await;

    let r = s
        .call("POST", &format!("/apps/susp/machines/{id}/suspend"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state("susp", id, "suspended").await;
    let frozen = read();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(read(), frozen, "a suspended machine does not run");

    s.call("POST", &format!("/apps/susp/machines/{id}/start"), None)
        .await;
    s.wait_state("susp", id, "started").await;
    eventually(10, "counter to move on from where it was", || async {
        (read() > frozen + 2).then_some(())
    })
    .await;
    assert_eq!(s.main_pid("susp", id).await, pid, "resumed, not restarted");
}

#[tokio::test]
async fn stop_honours_signal_then_kills_after_timeout() {
    let s = TestServer::start().await;
    s.create_app("sig").await;
    let polite = s
        .create_machine(
            "sig",
            "trap 'echo got-term > term; exit 0' TERM; while :; do sleep 0.1; done",
            json!({}),
        )
        .await;
    let stubborn = s
        .create_machine(
            "sig",
            "trap '' INT TERM; while :; do sleep 0.1; done",
            json!({"stop_config": {"timeout": "1s"}}),
        )
        .await;
    let (p, st) = (
        polite["id"].as_str().unwrap(),
        stubborn["id"].as_str().unwrap(),
    );
    s.wait_state("sig", p, "started").await;
    s.wait_state("sig", st, "started").await;

    s.call(
        "POST",
        &format!("/apps/sig/machines/{p}/stop"),
        Some(json!({"signal": "SIGTERM", "timeout": "10s"})),
    )
    .await;
    s.wait_state("sig", p, "stopped").await;
    assert_eq!(
        read_file(
            &s.data_dir()
                .join("machines")
                .join(p)
                .join("rootfs")
                .join("term")
        ),
        "got-term\n"
    );
    let exit = s
        .events("sig", p)
        .await
        .into_iter()
        .find(|e| e["type"] == "exit")
        .unwrap();
    assert_eq!(exit["request"]["exit_event"]["exit_code"], 0);

    let started = Instant::now();
    s.call("POST", &format!("/apps/sig/machines/{st}/stop"), None)
        .await;
    s.wait_state("sig", st, "stopped").await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for the stop timeout"
    );
    let exit = s
        .events("sig", st)
        .await
        .into_iter()
        .find(|e| e["type"] == "exit")
        .unwrap();
    assert_eq!(
        exit["request"]["exit_event"]["signal"], 9,
        "killed after the timeout: {exit}"
    );
}

#[tokio::test]
async fn restart_and_update() {
    let s = TestServer::start().await;
    s.create_app("upd").await;
    let m = s
        .create_machine("upd", SLEEPER, json!({"env": {"V": "1"}}))
        .await;
    let id = m["id"].as_str().unwrap();
    let v1 = m["instance_id"].as_str().unwrap().to_string();
    s.wait_state("upd", id, "started").await;
    let pid1 = s.main_pid("upd", id).await;

    let r = s
        .call(
            "POST",
            &format!("/apps/upd/machines/{id}/restart?timeout=2s&signal=SIGTERM&force_stop=false"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state("upd", id, "started").await;
    assert_ne!(
        s.main_pid("upd", id).await,
        pid1,
        "a restart is a new process"
    );
    assert_eq!(
        s.machine("upd", id).await["instance_id"],
        v1.as_str(),
        "same version"
    );

    let mut config = m["config"].clone();
    config["env"]["V"] = json!("2");
    let r = s
        .call(
            "POST",
            &format!("/apps/upd/machines/{id}"),
            Some(json!({"config": config, "current_version": "01BOGUSVERSION0000000000000"})),
        )
        .await;
    assert_eq!(r.status, 412, "{r:?}");
    let r = s
        .call(
            "POST",
            &format!("/apps/upd/machines/{id}"),
            Some(json!({"config": config, "current_version": v1})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let v2 = r.body["instance_id"].as_str().unwrap().to_string();
    assert_ne!(v1, v2);
    let w = s
        .call(
            "GET",
            &format!("/apps/upd/machines/{id}/wait?state=started&version={v2}&timeout=30"),
            None,
        )
        .await;
    assert_eq!(w.status, 200, "{w:?}");
    let out = s
        .exec(
            "upd",
            id,
            &["/bin/sh", "-c", "echo $V $FLY_MACHINE_VERSION"],
        )
        .await;
    assert_eq!(out["stdout"].as_str().unwrap(), format!("2 {v2}\n"));
    let versions = s
        .call("GET", &format!("/apps/upd/machines/{id}/versions"), None)
        .await
        .body;
    assert_eq!(versions.as_array().unwrap().len(), 2);
    assert_eq!(versions[0]["version"], v2.as_str());

    // A stopped machine stays stopped through an update.
    s.call("POST", &format!("/apps/upd/machines/{id}/stop"), None)
        .await;
    s.wait_state("upd", id, "stopped").await;
    config["env"]["V"] = json!("3");
    let r = s
        .call(
            "POST",
            &format!("/apps/upd/machines/{id}"),
            Some(json!({"config": config})),
        )
        .await;
    assert_eq!(r.status, 200);
    let settled = s.wait_state("upd", id, "settled").await;
    assert_eq!(settled.body["state"], "stopped");
}

#[tokio::test]
async fn wait_with_and_without_timeouts() {
    let s = TestServer::start().await;
    s.create_app("waits").await;
    let m = s.create_machine("waits", SLEEPER, json!({})).await;
    let id = m["id"].as_str().unwrap();
    s.wait_state("waits", id, "started").await;
    let base = format!("/apps/waits/machines/{id}/wait");

    let r = s
        .call("GET", &format!("{base}?state=stopped&timeout=1"), None)
        .await;
    assert_eq!(r.status, 408);
    assert_eq!(
        r.error(),
        "deadline_exceeded: machine failed to reach desired state, stopped, currently started"
    );
    for bad in ["timeout=0", "timeout=61", "state=sideways", "timeout=soon"] {
        let r = s.call("GET", &format!("{base}?{bad}"), None).await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(r.error().starts_with("invalid_argument:"), "{r:?}");
    }
    let r = s
        .call("GET", &format!("{base}?state=stopped&state=started"), None)
        .await;
    assert_eq!((r.status, r.body["state"].as_str()), (200, Some("started")));
    let r = s
        .call(
            "GET",
            &format!("{base}?state=stopped,started&timeout=5"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s.call("GET", &base, None).await;
    assert_eq!(r.status, 200, "no params: state started, default timeout");

    // A wait that is satisfied while it waits.
    let url = format!("{base}?state=stopped&timeout=30");
    let waiter = s.call("GET", &url, None);
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.call("POST", &format!("/apps/waits/machines/{id}/stop"), None)
            .await
    };
    let (w, _) = tokio::join!(waiter, stopper);
    assert_eq!((w.status, w.body["state"].as_str()), (200, Some("stopped")));
}

#[tokio::test]
async fn restart_policy_and_auto_destroy() {
    let s = TestServer::start().await;
    s.create_app("pol").await;
    let failing = s
        .create_machine(
            "pol",
            "exit 3",
            json!({"restart": {"policy": "on-failure", "max_retries": 2}}),
        )
        .await;
    let clean = s
        .create_machine(
            "pol",
            "exit 0",
            json!({"restart": {"policy": "on-failure"}}),
        )
        .await;
    let always = s
        .create_machine(
            "pol",
            "sleep 0.2; exit 0",
            json!({"restart": {"policy": "always"}}),
        )
        .await;
    let oneshot = s
        .create_machine(
            "pol",
            "exit 0",
            json!({"restart": {"policy": "no"}, "auto_destroy": true}),
        )
        .await;
    let (f, c, a, o) = (
        failing["id"].as_str().unwrap(),
        clean["id"].as_str().unwrap(),
        always["id"].as_str().unwrap(),
        oneshot["id"].as_str().unwrap(),
    );
    let exits = |id: &str| {
        let id = id.to_string();
        let s = &s;
        async move {
            s.events("pol", &id)
                .await
                .into_iter()
                .filter(|e| e["type"] == "exit")
                .collect::<Vec<_>>()
        }
    };
    // on-failure with 2 retries: 3 runs, then it stays stopped.
    let f_exits = eventually(15, "three failed runs", || async {
        let e = exits(f).await;
        (e.len() >= 3 && e[0]["request"]["exit_event"]["restarting"] == false).then_some(e)
    })
    .await;
    assert_eq!(f_exits.len(), 3);
    assert_eq!(f_exits[0]["request"]["exit_event"]["exit_code"], 3);
    assert_eq!(f_exits[1]["request"]["exit_event"]["restarting"], true);
    assert_eq!(s.machine("pol", f).await["state"], "stopped");

    // A clean exit under on-failure is not restarted.
    let c_exits = eventually(10, "clean exit", || async {
        let e = exits(c).await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(c_exits[0]["request"]["exit_event"]["restarting"], false);

    // always: restarts after a clean exit too.
    eventually(15, "always to restart twice", || async {
        (exits(a).await.len() >= 2).then_some(())
    })
    .await;

    // auto_destroy: gone once it exits.
    s.wait_state("pol", o, "destroyed").await;
}

#[tokio::test]
async fn skip_launch_then_start_and_app_delete() {
    let s = TestServer::start().await;
    s.create_app("skip").await;
    let body = json!({"skip_launch": true, "name": "later", "region": "ams", "config": {"image": "x", "init": {"exec": ["sleep", "300"]}}});
    let r = s
        .call("POST", "/apps/skip/machines", Some(body.clone()))
        .await;
    assert_eq!(r.status, 200);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        (r.body["name"].as_str(), r.body["region"].as_str()),
        (Some("later"), Some("ams"))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.machine("skip", &id).await["state"], "created");
    let r = s.call("POST", "/apps/skip/machines", Some(body)).await;
    assert_eq!(r.status, 409, "names are unique within an app: {r:?}");
    s.call("POST", &format!("/apps/skip/machines/{id}/start"), None)
        .await;
    s.wait_state("skip", &id, "started").await;
    let pid = s.main_pid("skip", &id).await;
    assert_eq!(
        s.call("GET", "/apps/skip", None).await.body["machine_count"],
        1
    );

    let r = s.call("DELETE", "/apps/skip", None).await;
    assert_eq!(r.status, 202);
    assert_eq!(s.call("GET", "/apps/skip", None).await.status, 404);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "its machines were destroyed"
    );
}
