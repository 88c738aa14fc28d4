//! The user's workflow end to end on real containerd, buildah and the platform registry:
//! `hangar deploy` of the examples from their fly.toml and Dockerfile, reached through
//! the proxy; zero failed requests during rolling and bluegreen deploys; a failing
//! release command changing nothing; a failing health check rolling updated machines
//! back; `releases rollback` restoring image, config and secrets together; `launch`.
//!
//! These need root, containerd, runc, buildah, docker-registry and busybox-static; CI
//! installs them. Elsewhere each test says why it skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::harness::{stderr, stdout, TestServer};
use hangar_testkit::builds_available;

pub(crate) fn can_run() -> bool {
    match builds_available() {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "deploy tests cannot run in CI: {why}"
            );
            eprintln!("skipping deploy test: {why}");
            false
        }
    }
}

/// A copy of `examples/<name>` named `app`, with a static busybox beside its Dockerfile.
pub(crate) fn example(name: &str, app: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = hangar_testkit::example(name, app, tmp.path());
    (tmp, dir)
}

pub(crate) fn edit(path: &Path, f: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, f(text)).unwrap();
}

/// Runs the CLI in `dir`; asserts success and returns standard output.
pub(crate) fn ok(s: &TestServer, dir: &Path, args: &[&str]) -> String {
    let out = s.cli_in(dir, args);
    assert!(
        out.status.success(),
        "hangar {args:?} failed:\n{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        s.log()
    );
    stdout(&out)
}

pub(crate) fn status(s: &TestServer, app: &str) -> Value {
    serde_json::from_str(&ok(s, Path::new("."), &["status", "-a", app, "--json"])).unwrap()
}

/// The release version of each machine, sorted.
fn versions(s: &TestServer, app: &str) -> Vec<String> {
    let st = status(s, app);
    let mut v: Vec<String> = st["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}:{}",
                m["process_group"].as_str().unwrap(),
                m["version"].as_str().unwrap_or("-")
            )
        })
        .collect();
    v.sort();
    v
}

fn curl_https(s: &TestServer, app: &str, path: &str) -> (i32, String) {
    let ca = s.dir.path().join("ca.pem");
    if !ca.exists() {
        std::fs::write(&ca, stdout(&s.cli(&["certs", "ca"]))).unwrap();
    }
    let host = format!("{app}.localhost");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&ca)
        .args(["--resolve", &format!("{host}:{}:127.0.0.1", s.https_port)])
        .arg(format!("https://{host}:{}{path}", s.https_port))
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_example_deploys_from_its_fly_toml_and_serves_through_the_proxy() {
    if !can_run() {
        return;
    }
    let s = TestServer::start_with(&["--driver", "containerd"]).await;
    let (_tmp, dir) = example("web", "web-example");
    ok(&s, &dir, &["config", "validate"]);
    ok(&s, &dir, &["apps", "create", "web-example"]);
    let out = ok(&s, &dir, &["deploy"]);
    assert!(
        out.contains("STEP 1/6: FROM scratch"),
        "the build log streams: {out}"
    );
    assert!(out.contains("v1 deployed successfully"), "{out}");
    assert!(
        out.contains(&format!("https://web-example.localhost:{}/", s.https_port)),
        "the URL is printed: {out}"
    );
    let (code, body) = curl_https(&s, "web-example", "/");
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("Hello from Hangar"), "{body}");
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-H",
            "host: web-example.localhost",
        ])
        .arg(format!("http://127.0.0.1:{}/", s.http_port))
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out),
        format!("301 https://web-example.localhost:{}/", s.https_port),
        "HTTP is redirected to HTTPS (force_https)"
    );
    // Two machines (HA), on v1, healthy; the release names the pushed image.
    let st = status(&s, "web-example");
    let machines = st["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 2, "{st}");
    assert!(
        machines
            .iter()
            .all(|m| m["version"] == "1" && m["checks_passing"] == 1),
        "{st}"
    );
    let image = st["image"].as_str().unwrap();
    assert!(
        image.starts_with(&format!(
            "127.0.0.1:{}/web-example:deployment-",
            s.registry_port
        )),
        "{image}"
    );
    // The config a release stores comes back as fly.toml.
    let saved = tempfile::tempdir().unwrap();
    ok(&s, saved.path(), &["config", "save", "-a", "web-example"]);
    let text = std::fs::read_to_string(saved.path().join("fly.toml")).unwrap();
    assert!(
        text.contains("app = \"web-example\"") && text.contains("/healthz"),
        "{text}"
    );
    ok(&s, saved.path(), &["config", "validate"]);
}

/// Requests through the proxy from several loops until stopped: successes, failures.
struct LoadLoop {
    stop: Arc<AtomicBool>,
    good: Arc<AtomicU32>,
    bad: Arc<AtomicU32>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl LoadLoop {
    fn start(s: &TestServer, app: &str, clients: usize) -> LoadLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let (good, bad) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let url = format!("http://127.0.0.1:{}/", s.http_port);
        let host = format!("{app}.localhost");
        let tasks = (0..clients)
            .map(|_| {
                let (stop, good, bad, url, host) = (
                    stop.clone(),
                    good.clone(),
                    bad.clone(),
                    url.clone(),
                    host.clone(),
                );
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    let mut errors = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let r = http
                            .get(&url)
                            .header("host", &host)
                            .timeout(std::time::Duration::from_secs(10))
                            .send()
                            .await;
                        let body = match r {
                            Ok(r) if r.status() == 200 => r.text().await.map_err(|e| e.to_string()),
                            Ok(r) => Err(r.status().to_string()),
                            Err(e) => Err(e.to_string()),
                        };
                        match body {
                            Ok(b) if b.contains("Hello from Hangar") => {
                                good.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(b) => {
                                bad.fetch_add(1, Ordering::SeqCst);
                                errors.push(format!("unexpected body {b:?}"));
                            }
                            Err(e) => {
                                bad.fetch_add(1, Ordering::SeqCst);
                                errors.push(e);
                            }
                        }
                    }
                    errors
                })
            })
            .collect();
        LoadLoop {
            stop,
            good,
            bad,
            tasks,
        }
    }

    /// Stops the loops: successes, failures and what the failures were.
    async fn finish(self) -> (u32, u32, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut errors = Vec::new();
        for t in self.tasks {
            errors.extend(t.await.unwrap());
        }
        (
            self.good.load(Ordering::SeqCst),
            self.bad.load(Ordering::SeqCst),
            errors,
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_and_bluegreen_deploys_of_three_machines_fail_no_request() {
    if !can_run() {
        return;
    }
    let s = TestServer::start_with(&["--driver", "containerd"]).await;
    let (_tmp, dir) = example("web", "zero-drop");
    // Plain HTTP, so the load loop reads pages rather than redirects.
    edit(&dir.join("fly.toml"), |t| {
        t.replace("force_https = true", "force_https = false")
    });
    ok(&s, &dir, &["apps", "create", "zero-drop"]);
    ok(&s, &dir, &["deploy"]);
    ok(
        &s,
        &dir,
        &["scale", "count", "3", "-a", "zero-drop", "--yes"],
    );
    assert_eq!(versions(&s, "zero-drop"), ["app:1", "app:1", "app:1"]);
    let image = status(&s, "zero-drop")["image"]
        .as_str()
        .unwrap()
        .to_string();
    for (strategy, version) in [("rolling", "2"), ("bluegreen", "3")] {
        let load = LoadLoop::start(&s, "zero-drop", 4);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let out = ok(
            &s,
            &dir,
            &[
                "deploy",
                "--image",
                &image,
                "--strategy",
                strategy,
                "-e",
                &format!("DEPLOY={version}"),
            ],
        );
        assert!(
            out.contains(&format!("v{version} deployed successfully")),
            "{out}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let (good, bad, errors) = load.finish().await;
        assert_eq!(
            bad,
            0,
            "{strategy}: {bad} failed requests ({errors:?}) of {}\n{out}",
            good + bad
        );
        assert!(good > 50, "{strategy}: the load loop ran ({good} requests)");
        assert_eq!(
            versions(&s, "zero-drop"),
            vec![format!("app:{version}"); 3],
            "{strategy}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_release_command_aborts_with_its_output_and_changes_nothing() {
    if !can_run() {
        return;
    }
    let s = TestServer::start_with(&["--driver", "containerd"]).await;
    let (_tmp, dir) = example("rails-style", "railsish");
    ok(&s, &dir, &["apps", "create", "railsish"]);
    let out = ok(&s, &dir, &["deploy"]);
    assert!(
        out.contains("migrate: 3 migrations applied"),
        "release command output: {out}"
    );
    // web: two machines (services); worker: one and a stopped standby.
    assert_eq!(
        versions(&s, "railsish"),
        ["web:1", "web:1", "worker:1", "worker:1"]
    );
    let before = status(&s, "railsish");
    let (code, body) = curl_https(&s, "railsish", "/");
    assert_eq!(code, 0);
    assert!(body.contains("rails-style web process"), "{body}");

    let out = s.cli_in(&dir, &["deploy", "-e", "MIGRATE_FAIL=1"]);
    assert!(!out.status.success());
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(
        o.contains("migrate: ERROR relation \"users\" already exists"),
        "output shown: {o}"
    );
    assert!(
        e.contains("release command failed") && e.contains("non-zero status of 1"),
        "{e}"
    );
    assert!(o.contains("no machine was changed"), "{o}");
    let after = status(&s, "railsish");
    assert_eq!(before["machines"], after["machines"], "no machine changed");
    let releases: Value =
        serde_json::from_str(&ok(&s, &dir, &["releases", "-a", "railsish", "--json"])).unwrap();
    assert_eq!(releases[0]["status"], "failed");
    assert_eq!(releases[1]["status"], "complete");
    assert_eq!(after["release"], 1, "the app stays on its current release");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_check_rolls_back_and_rollback_restores_image_config_and_secrets() {
    if !can_run() {
        return;
    }
    let s = TestServer::start_with(&["--driver", "containerd"]).await;
    let (_tmp, dir) = example("web", "roll");
    ok(&s, &dir, &["apps", "create", "roll"]);
    ok(&s, &dir, &["deploy"]);
    let v1_image = status(&s, "roll")["image"].as_str().unwrap().to_string();
    let out = ok(
        &s,
        &dir,
        &["secrets", "set", "-a", "roll", "FEATURE_KEY=alpha-one"],
    );
    assert!(out.contains("v2 deployed successfully"), "{out}");
    let env_of = |st: &Value| -> Vec<String> {
        st["machines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    for id in env_of(&status(&s, "roll")) {
        let env = s.exec("roll", &id, &["/bin/busybox", "env"]).await;
        assert!(
            env["stdout"]
                .as_str()
                .unwrap()
                .contains("FEATURE_KEY=alpha-one"),
            "{env}"
        );
    }
    // A new page and a check that cannot pass: the first machine updated goes back.
    std::fs::write(dir.join("www/index.html"), "v3 page").unwrap();
    edit(&dir.join("fly.toml"), |t| {
        t.replace("path = \"/healthz\"", "path = \"/missing\"")
    });
    let out = s.cli_in(&dir, &["deploy", "--wait-timeout", "6"]);
    assert!(!out.status.success());
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(
        e.contains("health checks") && e.contains("404"),
        "says what failed: {e}"
    );
    assert!(
        o.contains("last log lines of machine"),
        "shows the machine's log: {o}"
    );
    assert!(o.contains("back on the previous release"), "{o}");
    assert_eq!(versions(&s, "roll"), ["app:2", "app:2"]);
    let st = status(&s, "roll");
    for id in env_of(&st) {
        let m = s.machine("roll", &id).await;
        assert_eq!(
            m["config"]["services"][0]["checks"][0]["path"], "/healthz",
            "previous config"
        );
        assert_eq!(m["config"]["image"], v1_image.as_str(), "previous image");
        assert_eq!(m["state"], "started");
    }
    let (_, body) = curl_https(&s, "roll", "/");
    assert!(
        body.contains("Hello from Hangar"),
        "still serving v2: {body}"
    );

    // Back to v1: its image, its config, and its secrets (none).
    let out = ok(
        &s,
        &dir,
        &["releases", "rollback", "1", "-a", "roll", "--yes"],
    );
    assert!(out.contains("deployed successfully"), "{out}");
    for id in env_of(&status(&s, "roll")) {
        let env = s.exec("roll", &id, &["/bin/busybox", "env"]).await;
        assert!(
            !env["stdout"].as_str().unwrap().contains("FEATURE_KEY"),
            "{env}"
        );
        let m = s.machine("roll", &id).await;
        assert_eq!(m["config"]["image"], v1_image.as_str());
    }
    let list = ok(&s, &dir, &["secrets", "list", "-a", "roll", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap(),
        serde_json::json!([])
    );
    let releases: Value =
        serde_json::from_str(&ok(&s, &dir, &["releases", "-a", "roll", "--json"])).unwrap();
    assert_eq!(releases[0]["description"], "Rollback to v1");
    assert_eq!(releases[0]["image_ref"], v1_image.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_the_machine_and_nowhere_else() {
    if !can_run() {
        return;
    }
    let s = TestServer::start_with(&["--driver", "containerd"]).await;
    let (_tmp, dir) = example("web", "vault");
    ok(&s, &dir, &["apps", "create", "vault"]);
    ok(&s, &dir, &["deploy"]);
    const PLAIN: &str = "pl41ntext-N3VER-on-disk";
    let out = s.cli_in(
        &dir,
        &[
            "secrets",
            "set",
            "-a",
            "vault",
            &format!("DB_PASSWORD={PLAIN}"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut seen = stdout(&out) + &stderr(&out);
    let st = status(&s, "vault");
    for m in st["machines"].as_array().unwrap() {
        let id = m["id"].as_str().unwrap();
        let env = s.exec("vault", id, &["/bin/busybox", "env"]).await;
        assert!(
            env["stdout"]
                .as_str()
                .unwrap()
                .contains(&format!("DB_PASSWORD={PLAIN}")),
            "{env}"
        );
        seen.push_str(&s.machine("vault", id).await.to_string());
        seen.push_str(
            &s.call("GET", &format!("/apps/vault/machines/{id}/events"), None)
                .await
                .body
                .to_string(),
        );
    }
    for path in [
        "/apps/vault/secrets",
        "/apps/vault/secrets/DB_PASSWORD",
        "/apps/vault/releases",
        "/apps/vault/releases/current",
        "/apps/vault/machines",
    ] {
        seen.push_str(&s.call("GET", path, None).await.body.to_string());
    }
    seen.push_str(&ok(&s, &dir, &["secrets", "list", "-a", "vault"]));
    seen.push_str(&ok(&s, &dir, &["releases", "-a", "vault", "--json"]));
    // A bad request carrying the value does not echo it.
    let r = s
        .raw(
            "POST",
            "/apps/vault/secrets",
            &format!("{{\"values\": {{\"X\": 5, \"Y\": \"{PLAIN}\"}}}}"),
            Some(&format!("Bearer {}", s.token)),
        )
        .await;
    assert_eq!(r.status, 400);
    seen.push_str(&r.body.to_string());
    assert!(
        !seen.contains(PLAIN),
        "the plaintext leaked into an answer:\n{seen}"
    );
    assert!(
        !s.log().contains(PLAIN),
        "the plaintext is in the server's log"
    );
    let grep = Command::new("grep")
        .args(["-r", "-l", "-a", PLAIN])
        .arg(s.data_dir())
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "the plaintext is on disk: {}",
        stdout(&grep)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn launch_writes_fly_toml_creates_the_app_and_deploys_and_is_safe_to_rerun() {
    if !can_run() {
        return;
    }
    let s = TestServer::start_with(&["--driver", "containerd"]).await;
    let (_tmp, dir) = example("web", "unused");
    std::fs::remove_file(dir.join("fly.toml")).unwrap();
    let out = ok(&s, &dir, &["launch", "--name", "launched", "--no-deploy"]);
    assert!(
        out.contains("internal port 8080") && out.contains("Created app launched"),
        "{out}"
    );
    let toml = std::fs::read_to_string(dir.join("fly.toml")).unwrap();
    for want in [
        "app = \"launched\"",
        "internal_port = 8080",
        "force_https = true",
        "auto_stop_machines = \"stop\"",
        "auto_start_machines = true",
        "min_machines_running = 0",
    ] {
        assert!(toml.contains(want), "{want} in {toml}");
    }
    let out = ok(&s, &dir, &["launch", "--flycast"]);
    assert!(
        out.contains("existing fly.toml") && out.contains("App launched exists"),
        "{out}"
    );
    assert!(out.contains("v1 deployed successfully"), "{out}");
    assert!(
        out.contains("Allocated Flycast address fdaa:0:1:0:1::")
            && out.contains("(launched.flycast)"),
        "{out}"
    );
    let out = ok(&s, &dir, &["deploy", "--flycast"]);
    assert!(
        out.contains("Flycast address fdaa:0:1:0:1::"),
        "kept: {out}"
    );
    let out = ok(&s, &dir, &["ips", "list", "--json"]);
    let private = serde_json::from_str::<Vec<serde_json::Value>>(&out)
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "private_v6")
        .count();
    assert_eq!(private, 1, "one Flycast address however often asked: {out}");
    assert_eq!(
        std::fs::read_to_string(dir.join("fly.toml")).unwrap(),
        toml,
        "left as it was"
    );
    let (code, body) = curl_https(&s, "launched", "/");
    assert_eq!(code, 0);
    assert!(body.contains("Hello from Hangar"));
}
