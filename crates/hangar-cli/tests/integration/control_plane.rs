//! The control plane's database: two servers on one PostgreSQL database (one active,
//! one hot standby that takes over the same apps and machines), and `--database`
//! values that cannot work, each refused at start with one line and nothing written.

use std::process::Command;

use serde_json::json;

use crate::harness::{eventually, free_port, stderr, TestServer, HANGAR, TEST_MASTER_KEY};

/// The test PostgreSQL, or `None` (saying why) on a host without one; CI installs it.
fn postgres() -> Option<&'static hangar_testkit::TestPostgres> {
    match hangar_testkit::TestPostgres::shared() {
        Ok(pg) => Some(pg),
        Err(why) => {
            eprintln!("skipping: this test needs PostgreSQL: {why}");
            None
        }
    }
}

/// A PostgreSQL of the test's own, or `None` (saying why).
fn own_postgres() -> Option<hangar_testkit::TestPostgres> {
    match hangar_testkit::TestPostgres::start_own() {
        Ok(pg) => Some(pg),
        Err(why) => {
            eprintln!("skipping: this test needs PostgreSQL: {why}");
            None
        }
    }
}

#[tokio::test]
async fn a_standby_control_plane_takes_over_the_same_apps_and_machines() {
    let Some(pg) = postgres() else { return };
    let db = pg.fresh_database();
    // One control plane with its agent, then another on the same database and host.
    let mut primary = TestServer::start_embedded_on(&["--driver", "process"], &[], Some(db)).await;
    primary.create_app("shared").await;
    let m = primary
        .create_machine("shared", "exec sleep 600", json!({}))
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    primary.wait_state("shared", &id, "started").await;

    let mut standby = TestServer::standby_of(&primary);
    assert!(
        !standby.answers_within(3).await,
        "a standby serves nothing while the primary leads"
    );
    assert!(standby.exited().is_none(), "{}", standby.log());
    assert!(standby.log().contains("standing by"), "{}", standby.log());

    primary.kill9();
    assert!(
        standby.answers_within(30).await,
        "the standby takes over: {}",
        standby.log()
    );
    let app = standby.call("GET", "/apps/shared", None).await;
    assert_eq!(app.status, 200, "{app:?}");
    let machine = eventually(20, "the standby adopts the running machine", || async {
        let r = standby
            .call("GET", &format!("/apps/shared/machines/{id}"), None)
            .await;
        (r.body["state"] == "started").then_some(r)
    })
    .await;
    assert_eq!(machine.body["id"], id.as_str());
    let r = standby
        .call("POST", &format!("/apps/shared/machines/{id}/stop"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    standby.wait_state("shared", &id, "stopped").await;
    let fresh = standby
        .create_machine("shared", "exec sleep 600", json!({}))
        .await;
    standby
        .wait_state("shared", fresh["id"].as_str().unwrap(), "started")
        .await;
}

/// Runs `hangar server` with the given extra arguments and environment in a new data
/// dir; returns its stderr and the data dir, after checking it failed.
fn refused(args: &[&str], env: &[(&str, &str)]) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(HANGAR)
        .args(["server", "--driver", "process", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--api-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--https-listen", &format!("127.0.0.1:{}", free_port())])
        .args(args)
        .envs(env.iter().copied())
        .env("HANGAR_CONFIG", dir.path().join("cli.toml"))
        .env("HANGAR_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success(), "started: {}", stderr(&out));
    let text = stderr(&out);
    assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
    (text, dir)
}

fn nothing_written(dir: &tempfile::TempDir) {
    let data = dir.path().join("data");
    let files: Vec<_> = std::fs::read_dir(&data)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(files.is_empty(), "wrote {files:?}");
}

#[tokio::test]
async fn databases_that_cannot_work_are_refused_at_start() {
    let (text, dir) = refused(&["--database", "mysql://root:hunter2@db/hangar"], &[]);
    assert!(text.contains("sqlite:PATH or postgres://"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    nothing_written(&dir);

    let port = free_port();
    let url = format!("postgres://hangar:hunter2@127.0.0.1:{port}/hangar");
    let (text, dir) = refused(
        &["--database", &url],
        &[("HANGAR_MASTER_KEY", TEST_MASTER_KEY)],
    );
    assert!(
        text.contains(&format!(
            "cannot reach PostgreSQL at 127.0.0.1:{port}/hangar"
        )),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    nothing_written(&dir);

    let no_keys = [("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")];
    let (text, dir) = refused(&["--snapshot-bucket", "s3://snapshots"], &no_keys);
    assert!(text.contains("AWS_SECRET_ACCESS_KEY"), "{text}");
    nothing_written(&dir);
    let keys = [("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s")];
    let (text, dir) = refused(&["--snapshot-bucket", "s3://Not_A_Bucket"], &keys);
    assert!(text.contains("bucket name"), "{text}");
    nothing_written(&dir);

    let Some(pg) = postgres() else { return };
    let (text, dir) = refused(&["--database", &pg.fresh_database()], &[]);
    assert!(text.contains("HANGAR_MASTER_KEY"), "{text}");
    nothing_written(&dir);

    let newer = pg.fresh_database();
    let name = newer.rsplit('/').next().unwrap();
    pg.psql(
        name,
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT); \
         INSERT INTO schema_migrations VALUES (999, 'later')",
    )
    .unwrap();
    let (text, dir) = refused(
        &["--database", &newer],
        &[("HANGAR_MASTER_KEY", TEST_MASTER_KEY)],
    );
    assert!(
        text.contains("newer than this hangar understands"),
        "{text}"
    );
    nothing_written(&dir);
    let tables = pg
        .psql(
            name,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .unwrap();
    assert_eq!(tables, "1", "only the table that was there");
}

#[tokio::test]
async fn a_second_server_on_one_sqlite_file_is_refused() {
    let first = TestServer::start_on(&["--driver", "process"], &[], None).await;
    let db = format!("sqlite:{}", first.data_dir().join("hangar.db").display());
    let (text, _dir) = refused(&["--database", &db], &[]);
    assert!(text.contains("in use by another hangar server"), "{text}");
    let r = first.call("GET", "/apps?org_slug=personal", None).await;
    assert_eq!(r.status, 200, "the first server is untouched: {r:?}");
}

const ROLLING_TOML: &str = r#"
app = "rolling"
kill_signal = "SIGTERM"
kill_timeout = "2s"

[env]
  ROUND = "0"

[processes]
  app = "/bin/sh -c 'exec sleep 3600'"
"#;

#[tokio::test]
async fn a_postgres_restart_mid_rolling_deploy_leaves_no_half_done_deploy() {
    let Some(pg) = own_postgres() else { return };
    let s = TestServer::start_on(&["--driver", "process"], &[], Some(pg.fresh_database())).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fly.toml"), ROLLING_TOML).unwrap();
    for args in [
        &["apps", "create", "rolling"][..],
        &["deploy", "--image", "busybox"],
        &["scale", "count", "4", "--yes"],
    ] {
        let o = s.cli_in(dir.path(), args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    std::fs::write(
        dir.path().join("fly.toml"),
        ROLLING_TOML.replace("ROUND = \"0\"", "ROUND = \"1\""),
    )
    .unwrap();
    let deploy = s
        .command(&["deploy", "--image", "busybox"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    pg.restart().unwrap();
    let out = tokio::task::spawn_blocking(move || deploy.wait_with_output().unwrap())
        .await
        .unwrap();

    // Settled: every machine on one version, the one the deploy's outcome says, and at
    // rest (the first deploy leaves one of the four a stopped standby, as Fly does).
    let mut round = None;
    let mut last = serde_json::Value::Null;
    for _ in 0..120 {
        let r = s.call("GET", "/apps/rolling/machines", None).await;
        let machines = r.body.as_array().cloned().unwrap_or_default();
        let rounds: Vec<&str> = machines
            .iter()
            .filter_map(|m| m["config"]["env"]["ROUND"].as_str())
            .collect();
        if machines.len() == 4
            && rounds.len() == 4
            && machines.iter().all(|m| {
                ["started", "stopped", "created"].contains(&m["state"].as_str().unwrap_or(""))
            })
            && machines.iter().filter(|m| m["state"] == "started").count() >= 3
            && rounds.iter().all(|r| *r == rounds[0])
        {
            round = Some(rounds[0].to_string());
            break;
        }
        last = serde_json::json!(machines
            .iter()
            .map(|m| (
                m["id"].clone(),
                m["state"].clone(),
                m["config"]["env"]["ROUND"].clone()
            ))
            .collect::<Vec<_>>());
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let Some(round) = round else {
        panic!(
            "the app never settled on one version: {last}\ndeploy: {}{}\nserver log:\n{}",
            stdout(&out),
            stderr(&out),
            s.log()
        );
    };
    let said = format!("{}{}", stdout(&out), stderr(&out));
    if out.status.success() {
        assert_eq!(round, "1", "the deploy said it finished: {said}");
    } else {
        assert_eq!(
            round, "0",
            "the deploy said it failed, so it is undone: {said}"
        );
    }
    let releases = s.call("GET", "/apps/rolling/releases", None).await;
    let newest = &releases.body["releases"][0];
    assert!(
        newest["status"] != "running" && newest["status"] != "pending",
        "the release is not left running: {releases:?}"
    );
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn while_postgres_is_down_machines_serve_restart_and_the_api_answers_503() {
    let Some(pg) = own_postgres() else { return };
    let s = TestServer::start_on(&["--driver", "process"], &[], Some(pg.fresh_database())).await;
    s.create_app("outage").await;
    let port = free_port();
    let m = s
        .create_machine(
            "outage",
            &format!("mkdir -p www && echo up > www/index.html && exec busybox httpd -f -p 127.0.0.1:{port} -h www"),
            json!({"services": [{"protocol": "tcp", "internal_port": port,
                "ports": [{"port": 80, "handlers": ["http"]}]}],
                "restart": {"policy": "always"}}),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    s.wait_state("outage", &id, "started").await;
    let host = format!("outage.localhost:{}", s.http_port);
    eventually(10, "the proxy serves the machine", || async {
        (s.proxy_get(&host, "/", &[]).await.0 == 200).then_some(())
    })
    .await;
    let pid = s.main_pid("outage", &id).await;

    pg.stop().unwrap();
    let t = std::time::Instant::now();
    let r = s
        .call(
            "POST",
            "/apps/outage/machines",
            Some(json!({"config": {"image": "busybox"}})),
        )
        .await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body["status"], "unavailable", "{r:?}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t.elapsed()
    );
    let t = std::time::Instant::now();
    let again = s.call("GET", "/apps/outage/machines", None).await;
    assert_eq!(again.status, 503, "{again:?}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "once PostgreSQL is known down, calls fail at once: {:?}",
        t.elapsed()
    );
    for _ in 0..5 {
        let (status, body) = s.proxy_get(&host, "/", &[]).await;
        assert_eq!(
            (status, body.trim()),
            (200, "up"),
            "the data plane serves on"
        );
    }

    // The machine dies: the agent restarts it by its policy with the database away.
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    eventually(15, "the restarted machine serves again", || async {
        let (status, body) = s.proxy_get(&host, "/", &[]).await;
        (status == 200 && body.trim() == "up").then_some(())
    })
    .await;

    pg.start_again().unwrap();
    let listed = eventually(15, "the API works again", || async {
        let r = s.call("GET", "/apps/outage/machines", None).await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1), "{listed:?}");
    // What happened meanwhile reaches the control plane's copy, each step once.
    let events = eventually(
        15,
        "the outage's events reach the control plane",
        || async {
            let events = s.events("outage", &id).await;
            events
                .iter()
                .any(|e| e["type"] == "exit" && e["request"]["exit_event"]["restarting"] == true)
                .then_some(events)
        },
    )
    .await;
    assert_eq!(events[0]["status"], "started", "{events:?}");
    let mut ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "no event twice: {events:?}");
    let now = s
        .call("GET", &format!("/apps/outage/machines/{id}"), None)
        .await;
    assert_eq!(now.body["state"], "started", "{now:?}");
    assert_ne!(s.main_pid("outage", &id).await, pid, "a new run");
}
