//! The same lifecycle through the `hangar` CLI, as a user types it.

use serde_json::Value;

use crate::harness::{stderr, stdout, TestServer};

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "failed: {}\n{}", stdout(o), stderr(o));
    stdout(o)
}

#[tokio::test]
async fn cli_walks_the_lifecycle() {
    let s = TestServer::start().await;
    assert!(ok(&s.cli(&["apps", "create", "clapp"])).contains("New app created: clapp"));
    let list = ok(&s.cli(&["apps", "list"]));
    assert!(list.lines().next().unwrap().starts_with("NAME"), "{list}");
    assert!(list.contains("clapp"));
    let apps: Value = serde_json::from_str(&ok(&s.cli(&["apps", "list", "--json"]))).unwrap();
    assert_eq!(apps[0]["name"], "clapp");
    assert!(ok(&s.cli(&["apps", "show", "clapp"])).contains("personal"));
    assert!(ok(&s.cli(&["auth", "whoami"])).contains("admin@personal"));

    let run = ok(&s.cli(&[
        "machine", "run", "busybox", "sleep", "300", "-a", "clapp", "--env", "K=v", "--name", "one",
    ]));
    assert!(run.contains("is started"), "{run}");
    let machines: Value =
        serde_json::from_str(&ok(&s.cli(&["machine", "list", "-a", "clapp", "--json"]))).unwrap();
    let id = machines[0]["id"].as_str().unwrap().to_string();
    assert_eq!(machines[0]["name"], "one");
    assert!(ok(&s.cli(&["machine", "list", "-a", "clapp"])).contains(&id));
    let status = ok(&s.cli(&["machine", "status", &id, "-a", "clapp"]));
    assert!(
        status.contains("started") && status.contains("launch"),
        "{status}"
    );

    let exec = s.cli(&[
        "machine",
        "exec",
        &id,
        "sh -c 'echo $K; exit 3'",
        "-a",
        "clapp",
    ]);
    assert_eq!(exec.status.code(), Some(3));
    assert_eq!(stdout(&exec), "v\n");

    ok(&s.cli(&["machine", "stop", &id, "-a", "clapp", "--timeout", "2s"]));
    assert!(
        ok(&s.cli(&["machine", "wait", &id, "-a", "clapp", "--state", "stopped"]))
            .contains("stopped")
    );
    ok(&s.cli(&["machine", "start", &id, "-a", "clapp"]));
    ok(&s.cli(&["machine", "wait", &id, "-a", "clapp"]));
    ok(&s.cli(&["machine", "suspend", &id, "-a", "clapp"]));
    ok(&s.cli(&[
        "machine",
        "wait",
        &id,
        "-a",
        "clapp",
        "--state",
        "suspended",
    ]));
    ok(&s.cli(&["machine", "start", &id, "-a", "clapp"]));
    ok(&s.cli(&["machine", "wait", &id, "-a", "clapp"]));
    assert!(ok(&s.cli(&["machine", "restart", &id, "-a", "clapp"])).contains("restarted"));

    let before = s.machine("clapp", &id).await["instance_id"].clone();
    let upd = ok(&s.cli(&[
        "machine", "update", &id, "-a", "clapp", "--env", "K=w", "--yes",
    ]));
    assert!(upd.contains("updated to version"), "{upd}");
    assert_ne!(s.machine("clapp", &id).await["instance_id"], before);
    let exec = s.cli(&["machine", "exec", &id, "sh -c 'echo $K'", "-a", "clapp"]);
    assert_eq!(stdout(&exec), "w\n");

    ok(&s.cli(&["machine", "cordon", &id, "-a", "clapp"]));
    assert_eq!(s.machine("clapp", &id).await["cordoned"], true);
    ok(&s.cli(&["machine", "uncordon", &id, "-a", "clapp"]));

    s.call(
        "POST",
        &format!("/apps/clapp/machines/{id}/lease?ttl=60"),
        None,
    )
    .await;
    let leases = ok(&s.cli(&["machine", "leases", "view", &id, "-a", "clapp"]));
    assert!(leases.contains("admin@personal"), "{leases}");
    let blocked = s.cli(&["machine", "stop", &id, "-a", "clapp"]);
    assert!(!blocked.status.success());
    assert!(
        stderr(&blocked).starts_with("Error: aborted:"),
        "{}",
        stderr(&blocked)
    );
    ok(&s.cli(&["machine", "leases", "clear", &id, "-a", "clapp"]));

    // Destructive commands never prompt without a terminal.
    let refused = s.cli(&["machine", "destroy", &id, "-a", "clapp", "--force"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    let running = s.cli(&["machine", "destroy", &id, "-a", "clapp", "--yes"]);
    assert!(
        stderr(&running).contains("force=true"),
        "{}",
        stderr(&running)
    );
    ok(&s.cli(&["machine", "destroy", &id, "-a", "clapp", "--force", "--yes"]));
    let broken = s.cli(&[
        "machine",
        "run",
        "x",
        "-a",
        "clapp",
        "--",
        "/nonexistent/binary",
    ]);
    assert_eq!(broken.status.code(), Some(1));
    assert!(
        stderr(&broken).contains("failed to start: cannot run \"/nonexistent/binary\""),
        "{}",
        stderr(&broken)
    );
    ok(&s.cli(&["apps", "destroy", "clapp", "--yes"]));

    let missing = s.cli(&["apps", "show", "clapp"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(stderr(&missing), "Error: app not found\n");
    let no_app = s.cli(&["machine", "list"]);
    assert!(stderr(&no_app).contains("-a APP"), "{}", stderr(&no_app));
}

#[tokio::test]
async fn first_start_writes_token_and_cli_config() {
    let s = TestServer::start().await;
    let token_file = s.data_dir().join("admin-token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let cfg = std::fs::read_to_string(s.dir.path().join("cli.toml")).expect("CLI config written");
    assert!(cfg.contains(&s.token) && cfg.contains(&s.url()), "{cfg}");
    // The database holds a digest, never the token itself.
    let db = match &s.database {
        Some(url) => {
            let name = url.rsplit('/').next().unwrap();
            hangar_testkit::TestPostgres::shared()
                .unwrap()
                .psql(name, "SELECT id, name, sha256 FROM tokens")
                .unwrap()
                .into_bytes()
        }
        None => std::fs::read(s.data_dir().join("hangar.db")).unwrap(),
    };
    let needle = s.token.as_bytes();
    assert!(
        !db.windows(needle.len()).any(|w| w == needle),
        "token stored in clear"
    );
    // With only the config file, the CLI works.
    let o = std::process::Command::new(crate::harness::HANGAR)
        .args(["apps", "list"])
        .env("HANGAR_CONFIG", s.dir.path().join("cli.toml"))
        .env_remove("HANGAR_API_URL")
        .env_remove("HANGAR_API_TOKEN")
        .env_remove("FLY_API_TOKEN")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}
