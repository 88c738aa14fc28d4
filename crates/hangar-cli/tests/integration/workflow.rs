//! The workflow's edges on the process driver (no root needed): fly.toml errors named by
//! key, line and column; secrets through the API and the CLI, never echoed; releases and
//! restart-only deploys; scale with bad groups, counts and sizes refused; doctor; and a
//! missing Dockerfile or a broken build (on buildah) leaving the app on its release.

use std::path::Path;

use serde_json::{json, Value};

use crate::deploys::{edit, example, ok, status};
use crate::harness::{stderr, stdout, with_stdin, TestServer};

/// An app whose machines are host processes: a shell that prints its environment.
pub(crate) const PROC_TOML: &str = r#"
app = "proc"
kill_signal = "SIGTERM"
kill_timeout = "2s"

[env]
  GREETING = "hello"

[processes]
  app = "/bin/sh -c 'env > env.txt; exec sleep 3600'"
"#;

pub(crate) fn proc_app(s: &TestServer) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fly.toml"), PROC_TOML).unwrap();
    ok(s, Path::new("."), &["apps", "create", "proc"]);
    dir
}

pub(crate) fn fails(s: &TestServer, dir: &Path, args: &[&str]) -> String {
    let out = s.cli_in(dir, args);
    assert!(
        !out.status.success(),
        "hangar {args:?} should fail:\n{}",
        stdout(&out)
    );
    stderr(&out)
}

#[tokio::test]
async fn a_malformed_fly_toml_is_refused_naming_key_line_and_column() {
    let s = TestServer::start().await;
    let dir = proc_app(&s);
    let bad =
        "app = \"proc\"\n\n[http_service]\n  internal_port = \"eighty\"\n  internal_prot = 80\n";
    std::fs::write(dir.path().join("fly.toml"), bad).unwrap();
    let e = fails(&s, dir.path(), &["deploy", "--image", "busybox"]);
    assert!(
        e.contains("http_service.internal_port (line 4, column 19)"),
        "{e}"
    );
    assert!(e.contains("invalid type"), "says what was expected: {e}");
    let e = fails(&s, dir.path(), &["config", "validate"]);
    assert!(e.contains("line 4, column 19"), "{e}");
    // Unknown keys warn; --strict makes them errors.
    std::fs::write(
        dir.path().join("fly.toml"),
        "app = \"proc\"\n[http_service]\ninternal_prot = 80\n",
    )
    .unwrap();
    let out = s.cli_in(dir.path(), &["config", "validate"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("http_service.internal_prot (line 3, column 1): unknown key"),
        "{}",
        stderr(&out)
    );
    let e = fails(&s, dir.path(), &["config", "validate", "--strict"]);
    assert!(e.contains("unknown key"), "{e}");
    // Semantic errors, all of them, each with its key.
    std::fs::write(
        dir.path().join("fly.toml"),
        "app = \"proc\"\n[deploy]\nstrategy = \"yolo\"\n[checks.a]\ntype = \"udp\"\n",
    )
    .unwrap();
    let e = fails(&s, dir.path(), &["deploy", "--image", "busybox"]);
    assert!(
        e.contains("deploy.strategy (line 3, column 12): unsupported deployment strategy 'yolo'"),
        "{e}"
    );
    assert!(
        e.contains("checks.a (line 4, column 1): Can't process top level check 'a'"),
        "{e}"
    );
    let v: Value =
        serde_json::from_str(&ok(&s, dir.path(), &["releases", "-a", "proc", "--json"])).unwrap();
    assert_eq!(v, json!([]), "no release was made");
}

#[tokio::test]
async fn deploys_secrets_and_releases_on_the_process_driver() {
    let s = TestServer::start().await;
    let dir = proc_app(&s);
    let d = dir.path();
    // Staged before the first deploy: nothing to restart.
    let out = ok(
        &s,
        d,
        &["secrets", "set", "-a", "proc", "EARLY=staged-value"],
    );
    assert!(out.contains("staged for the first deployment"), "{out}");
    let out = ok(&s, d, &["deploy", "--image", "busybox"]);
    assert!(out.contains("v1 deployed successfully"), "{out}");
    // One machine and a stopped standby (no services).
    let st = status(&s, "proc");
    let states: Vec<&str> = st["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states.iter().filter(|s| **s == "started").count(),
        1,
        "{st}"
    );
    assert_eq!(states.len(), 2, "{st}");
    let started = st["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["state"] == "started")
        .unwrap();
    let id = started["id"].as_str().unwrap().to_string();
    let env_file = s
        .data_dir()
        .join("machines")
        .join(&id)
        .join("rootfs/env.txt");
    let env = std::fs::read_to_string(&env_file).unwrap_or_default();
    assert!(
        env.contains("EARLY=staged-value") && env.contains("GREETING=hello"),
        "{env}"
    );
    assert!(env.contains("FLY_PROCESS_GROUP=app"), "{env}");

    // Import from stdin, then the machines restart with the new values.
    let out = with_stdin(
        s.command(&["secrets", "import", "-a", "proc"]),
        "# comment\nAPI_KEY=\"k-123\"\nMULTI=\"\"\"a\nb\"\"\"\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("v2 deployed successfully"),
        "{}",
        stdout(&out)
    );
    let env = std::fs::read_to_string(&env_file).unwrap_or_default();
    assert!(env.contains("API_KEY=k-123"), "{env}");
    let listed: Value =
        serde_json::from_str(&ok(&s, d, &["secrets", "list", "-a", "proc", "--json"])).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["API_KEY", "EARLY", "MULTI"]);
    assert!(!listed.to_string().contains("k-123"));
    // The run directory the shim reads holds no value.
    let spec = std::fs::read_to_string(
        s.data_dir()
            .join("machines")
            .join(&id)
            .join("run/spec.json"),
    )
    .unwrap_or_default();
    assert!(
        spec.contains("GREETING") && !spec.contains("k-123") && !spec.contains("staged-value"),
        "{spec}"
    );

    // Unset restarts too; releases list all three, newest first.
    ok(&s, d, &["secrets", "unset", "-a", "proc", "EARLY"]);
    let env = std::fs::read_to_string(&env_file).unwrap_or_default();
    assert!(!env.contains("EARLY="), "{env}");
    let releases: Value =
        serde_json::from_str(&ok(&s, d, &["releases", "-a", "proc", "--json"])).unwrap();
    let versions: Vec<i64> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [3, 2, 1]);
    assert_eq!(
        releases[0]["description"],
        "Restart machines with new secrets"
    );
    assert_eq!(releases[0]["stable"], true);
}

#[tokio::test]
async fn the_secrets_api_answers_in_flys_shapes_and_never_echoes_values() {
    let s = TestServer::start().await;
    s.create_app("vaulted").await;
    let r = s
        .call(
            "POST",
            "/apps/vaulted/secrets",
            Some(json!({"values": {"A": "one", "B": "two"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["Version"], 1);
    let a = &r.body["secrets"][0];
    assert_eq!(a["name"], "A");
    assert_eq!(a["digest"].as_str().unwrap().len(), 16);
    assert!(a.get("value").is_none() && a["created_at"].is_string() && a["updated_at"].is_string());
    let r = s
        .call(
            "POST",
            "/apps/vaulted/secrets/C",
            Some(json!({"value": "three"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        (r.body["name"].clone(), r.body["version"].clone()),
        (json!("C"), json!(2))
    );
    let r = s.call("GET", "/apps/vaulted/secrets/C", None).await;
    assert_eq!((r.status, r.body["name"].clone()), (200, json!("C")));
    let r = s.call("DELETE", "/apps/vaulted/secrets/A", None).await;
    assert_eq!(
        (
            r.status,
            r.body["version"].clone(),
            r.body["Version"].clone()
        ),
        (200, json!(3), json!(3))
    );
    let r = s
        .call(
            "POST",
            "/apps/vaulted/secrets",
            Some(json!({"values": {"B": null}})),
        )
        .await;
    assert_eq!(r.body["secrets"].as_array().unwrap().len(), 1);
    let r = s
        .call("GET", "/apps/vaulted/secrets?min_version=99", None)
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    for (body, want) in [
        (json!({"values": {"9LIVES": "x"}}), "invalid secret name"),
        (json!({"values": {"FLY_TOKEN": "x"}}), "set by the platform"),
        (
            json!({"values": {"BIG": "x".repeat(70_000)}}),
            "largest a secret may be",
        ),
        (json!({"values": {}}), "values is empty"),
    ] {
        let r = s.call("POST", "/apps/vaulted/secrets", Some(body)).await;
        assert_eq!(r.status, 400, "{r:?}");
        assert!(r.error().contains(want), "{}", r.error());
    }
    let r = s
        .raw(
            "POST",
            "/apps/vaulted/secrets",
            "{\"values\": {\"K\": [\"hunter2\"]}}",
            Some(&format!("Bearer {}", s.token)),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.error().contains("line 1 column") && !r.error().contains("hunter2"),
        "{}",
        r.error()
    );
    let r = s.call("GET", "/apps/nope/secrets", None).await;
    assert_eq!(r.status, 404);
    // The master key file: made once, 0600 (on PostgreSQL the key comes from the
    // environment, and no file is made).
    let key_file = s.data_dir().join("master.key");
    if crate::harness::on_postgres() {
        assert!(!key_file.exists());
    } else {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn scale_refuses_unknown_groups_bad_counts_and_sizes_and_changes_counts() {
    let s = TestServer::start().await;
    let dir = proc_app(&s);
    let d = dir.path();
    let e = fails(&s, d, &["scale", "count", "2", "-a", "proc", "--yes"]);
    assert!(e.contains("no complete releases"), "{e}");
    ok(&s, d, &["deploy", "--image", "busybox", "--ha=false"]);
    let count = |s: &TestServer| status(s, "proc")["machines"].as_array().unwrap().len();
    assert_eq!(count(&s), 1);
    let e = fails(
        &s,
        d,
        &["scale", "count", "worker=2", "-a", "proc", "--yes"],
    );
    assert!(
        e.contains("process group 'worker' is not in the app's config; its groups are: app"),
        "{e}"
    );
    let e = fails(&s, d, &["scale", "count", "many", "-a", "proc", "--yes"]);
    assert!(e.contains("invalid count \"many\""), "{e}");
    let e = fails(
        &s,
        d,
        &["scale", "vm", "huge-cpu-9x", "-a", "proc", "--yes"],
    );
    assert!(
        e.contains("'huge-cpu-9x' is an invalid machine size") && e.contains("shared-cpu-1x"),
        "{e}"
    );
    let e = fails(&s, d, &["scale", "memory", "12", "-a", "proc", "--yes"]);
    assert!(e.contains("too small"), "{e}");
    let e = fails(&s, d, &["scale", "count", "3", "-a", "proc"]);
    assert!(
        e.contains("--yes"),
        "asks, and without a terminal refuses: {e}"
    );
    assert_eq!(count(&s), 1, "nothing changed");
    ok(&s, d, &["scale", "count", "3", "-a", "proc", "--yes"]);
    assert_eq!(count(&s), 3);
    let shown: Value =
        serde_json::from_str(&ok(&s, d, &["scale", "show", "-a", "proc", "--json"])).unwrap();
    assert_eq!(shown[0]["count"], 3);
    ok(&s, d, &["scale", "memory", "512", "-a", "proc", "--yes"]);
    let shown: Value =
        serde_json::from_str(&ok(&s, d, &["scale", "show", "-a", "proc", "--json"])).unwrap();
    assert_eq!(shown[0]["memory_mb"], 512);
    ok(&s, d, &["scale", "count", "app=-2", "-a", "proc", "--yes"]);
    assert_eq!(count(&s), 1);
}

#[tokio::test]
async fn doctor_passes_the_web_example_and_fails_a_careless_config() {
    let s = TestServer::start().await;
    let (_tmp, dir) = example("web", "doc");
    let out = s.cli_in(&dir, &["doctor", "--json"]);
    let findings: Value = serde_json::from_str(&stdout(&out)).unwrap();
    for f in findings.as_array().unwrap() {
        let expect = if f["check"] == "redundancy" {
            "WARN"
        } else {
            "PASS"
        };
        assert_eq!(f["verdict"], expect, "{f}");
    }
    assert!(out.status.success(), "no FAIL: {}", stderr(&out));
    edit(&dir.join("fly.toml"), |t| {
        t.replace("force_https = true", "force_https = false")
            .replace(
                "GREETING = \"hello\"",
                "STRIPE_SECRET_KEY = \"sk_live_51HxQz8Kf0pL3mN7vR2tY9wB4cD6eF\"",
            )
    });
    let out = s.cli_in(&dir, &["doctor"]);
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(text.contains("FAIL  HTTPS forced"), "{text}");
    assert!(
        text.contains("FAIL  secrets in [env]") && text.contains("fix: move it out of fly.toml"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_dockerfile_or_a_broken_build_leaves_the_app_on_its_release() {
    let builds = hangar_testkit::builds_available();
    let s = match builds {
        Ok(()) => TestServer::start_with(&["--driver", "containerd"]).await,
        Err(_) => TestServer::start().await,
    };
    let (_tmp, dir) = example("web", "broken");
    ok(&s, &dir, &["apps", "create", "broken"]);
    std::fs::rename(dir.join("Dockerfile"), dir.join("Dockerfile.off")).unwrap();
    let e = fails(&s, &dir, &["deploy"]);
    assert!(
        e.contains("no Dockerfile at") && e.contains("--image"),
        "{e}"
    );
    if let Err(why) = builds {
        assert!(
            std::env::var_os("CI").is_none(),
            "builds must run in CI: {why}"
        );
        eprintln!("skipping the build half: {why}");
        return;
    }
    std::fs::rename(dir.join("Dockerfile.off"), dir.join("Dockerfile")).unwrap();
    ok(&s, &dir, &["deploy"]);
    let before = status(&s, "broken");
    edit(&dir.join("Dockerfile"), |t| {
        t.replace("COPY www /www", "COPY no-such-dir /www")
    });
    let e = fails(&s, &dir, &["deploy"]);
    assert!(
        e.contains("build failed") && e.contains("no-such-dir"),
        "{e}"
    );
    let after = status(&s, "broken");
    assert_eq!(before["machines"], after["machines"]);
    assert_eq!(after["release"], 1);
}
