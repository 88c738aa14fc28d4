//! Deploys that meet trouble, on the process driver: a machine leased by someone else,
//! a CLI that detaches, a server killed mid-deploy (the deploy is undone on restart),
//! machine checks that fail, and a deploy that starts while machines still move.

use serde_json::Value;

use crate::deploys::{ok, status};
use crate::harness::{eventually, stderr, stdout, TestServer};
use crate::workflow::{fails, proc_app, PROC_TOML};

#[tokio::test]
async fn a_deploy_holds_leases_and_stops_at_a_machine_leased_by_someone_else() {
    let s = TestServer::start().await;
    let dir = proc_app(&s);
    let d = dir.path();
    ok(&s, d, &["deploy", "--image", "busybox", "--ha=false"]);
    let id = status(&s, "proc")["machines"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let lease_path = format!("/apps/proc/machines/{id}/lease");
    let r = s.call("POST", &format!("{lease_path}?ttl=60"), None).await;
    assert_eq!(r.status, 201, "{r:?}");
    let nonce = r.body["data"]["nonce"].as_str().unwrap().to_string();
    let e = fails(&s, d, &["deploy", "--image", "busybox", "-e", "STEP=2"]);
    assert!(e.contains(&format!("machine {id} is leased by")), "{e}");
    assert_eq!(
        status(&s, "proc")["machines"][0]["version"],
        "1",
        "nothing changed"
    );
    let r = s
        .call_with(
            "DELETE",
            &lease_path,
            None,
            &[("fly-machine-lease-nonce", &nonce)],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    ok(&s, d, &["deploy", "--image", "busybox", "-e", "STEP=3"]);
    assert_eq!(status(&s, "proc")["machines"][0]["version"], "3");
    // The deploy's own leases are gone once it ends.
    let r = s.call("GET", &lease_path, None).await;
    assert_eq!(r.status, 404, "{r:?}");
}

#[tokio::test]
async fn a_detached_deploy_runs_on_and_a_server_stop_marks_it_interrupted() {
    let mut s = TestServer::start().await;
    let dir = proc_app(&s);
    let d = dir.path();
    std::fs::write(
        d.join("fly.toml"),
        format!("{PROC_TOML}\n[deploy]\n  release_command = \"sleep 30\"\n"),
    )
    .unwrap();
    let out = ok(&s, d, &["deploy", "--image", "busybox", "--detach"]);
    assert!(
        out.contains("Release v1 created") && out.contains("runs on the server"),
        "{out}"
    );
    let releases: Value =
        serde_json::from_str(&ok(&s, d, &["releases", "-a", "proc", "--json"])).unwrap();
    assert_eq!(releases[0]["status"], "running");
    assert_eq!(releases[0]["in_progress"], true);
    s.kill9();
    s.spawn().await;
    let releases: Value =
        serde_json::from_str(&ok(&s, d, &["releases", "-a", "proc", "--json"])).unwrap();
    assert_eq!(releases[0]["status"], "interrupted", "{releases}");
    assert!(releases[0]["error"]
        .as_str()
        .unwrap()
        .contains("deploy again"));
    // Following it now tells how it ended.
    let r = s
        .call(
            "GET",
            &format!(
                "/apps/proc/releases/{}/progress",
                releases[0]["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["kind"], "failed", "{r:?}");
    assert!(
        r.body["message"].as_str().unwrap().contains("interrupted"),
        "{r:?}"
    );
}

#[tokio::test]
async fn machine_checks_test_each_updated_machine_and_a_failing_one_rolls_back() {
    let s = TestServer::start().await;
    let dir = proc_app(&s);
    let d = dir.path();
    let with_check = |script: &str| {
        format!("{PROC_TOML}\n[[machine_checks]]\n  command = [\"/bin/sh\", \"-c\", {script:?}]\n")
    };
    std::fs::write(
        d.join("fly.toml"),
        with_check("test \"$FLY_TEST_COMMAND\" = 1 && echo checking $FLY_TEST_MACHINE_IP"),
    )
    .unwrap();
    ok(&s, d, &["deploy", "--image", "busybox", "--ha=false"]);
    let ip = status(&s, "proc")["machines"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let m = s.machine("proc", &ip).await;
    let private_ip = m["private_ip"].as_str().unwrap().to_string();
    let out = ok(&s, d, &["deploy", "--image", "busybox", "-e", "STEP=2"]);
    assert!(out.contains("machine check passed"), "{out}");
    std::fs::write(
        d.join("fly.toml"),
        with_check("echo bad news for $FLY_TEST_MACHINE_IP; exit 3"),
    )
    .unwrap();
    let out = s.cli_in(d, &["deploy", "--image", "busybox", "-e", "STEP=3"]);
    assert!(!out.status.success());
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(
        e.contains("machine check `/bin/sh -c") && e.contains("exited with status 3"),
        "{e}"
    );
    assert!(
        o.contains(&format!("bad news for {private_ip}")),
        "the test's output: {o}"
    );
    assert!(o.contains("back on the previous release"), "{o}");
    assert_eq!(status(&s, "proc")["machines"][0]["version"], "2");
}

#[tokio::test]
async fn a_deploy_right_after_an_immediate_one_waits_for_machines_to_settle() {
    let s = TestServer::start().await;
    let dir = proc_app(&s);
    let d = dir.path();
    // Machines that take a second to stop, so the next deploy finds them mid-change.
    let slow = PROC_TOML.replace(
        "app = \"/bin/sh -c 'env > env.txt; exec sleep 3600'\"",
        "app = \"/bin/sh -c 'trap \\\"sleep 1; exit 0\\\" TERM; while :; do sleep 0.1; done'\"",
    );
    assert_ne!(slow, PROC_TOML);
    std::fs::write(d.join("fly.toml"), slow).unwrap();
    ok(&s, d, &["deploy", "--image", "busybox", "--ha=false"]);
    ok(&s, d, &["scale", "count", "3", "-a", "proc", "--yes"]);
    // An immediate deploy returns while its machines restart; the next one must not
    // take "replacing" for "stopped" and leave them down.
    ok(
        &s,
        d,
        &[
            "deploy",
            "--image",
            "busybox",
            "--strategy",
            "immediate",
            "-e",
            "STEP=2",
        ],
    );
    ok(&s, d, &["deploy", "--image", "busybox", "-e", "STEP=3"]);
    let st = status(&s, "proc");
    let machines = st["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 3, "{st}");
    for m in machines {
        assert_eq!(
            (m["state"].as_str(), m["version"].as_str()),
            (Some("started"), Some("3")),
            "{st}"
        );
    }
}

#[tokio::test]
async fn a_deploy_cut_short_by_a_server_crash_is_undone_on_restart() {
    let mut s = TestServer::start().await;
    let dir = proc_app(&s);
    let d = dir.path();
    ok(&s, d, &["deploy", "--image", "busybox", "--ha=false"]);
    ok(&s, d, &["scale", "count", "3", "-a", "proc", "--yes"]);
    ok(
        &s,
        d,
        &[
            "deploy",
            "--image",
            "busybox",
            "--max-unavailable",
            "1",
            "-e",
            "STEP=2",
            "--detach",
        ],
    );
    // Crash once the deploy is half way: some machines on v2, some still on v1.
    eventually(30, "a half-done deploy", || async {
        let v: Vec<Value> = s
            .call("GET", "/apps/proc/machines", None)
            .await
            .body
            .as_array()?
            .clone();
        let of = |n: &str| {
            v.iter()
                .filter(|m| m["config"]["metadata"]["fly_release_version"] == n)
                .count()
        };
        (of("2") >= 1 && of("1") >= 1).then_some(())
    })
    .await;
    s.kill9();
    s.spawn().await;
    eventually(30, "every machine back on v1, started", || async {
        let st = status(&s, "proc");
        let ms = st["machines"].as_array()?.clone();
        (ms.len() == 3
            && ms
                .iter()
                .all(|m| m["version"] == "1" && m["state"] == "started"))
        .then_some(())
    })
    .await;
    let releases: Value =
        serde_json::from_str(&ok(&s, d, &["releases", "-a", "proc", "--json"])).unwrap();
    assert_eq!(releases[0]["status"], "interrupted");
    assert!(releases[0]["error"].as_str().unwrap().contains("undone"));
}
