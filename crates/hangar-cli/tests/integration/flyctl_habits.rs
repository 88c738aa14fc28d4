//! The CLI typed as flyctl users type it: every command that takes `-a` finds the app
//! in `./fly.toml` (or the file `-c/--config` names) without it, and says both ways
//! when it has neither; `deploy -a X --config other.toml` in the file's directory;
//! `version`, `open`, `auth token|login|logout`, `machine clone` and `apps restart
//! [APP]`.

use std::path::Path;

use serde_json::Value;

use crate::deploys::ok;
use crate::harness::{stderr, stdout, with_stdin, TestServer};
use crate::workflow::{fails, PROC_TOML};

fn json(s: &TestServer, dir: &Path, args: &[&str]) -> Value {
    let out = ok(s, dir, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}\n{out}"))
}

#[tokio::test]
async fn every_command_takes_the_app_from_fly_toml() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("fly.toml"),
        PROC_TOML.replace("\"proc\"", "\"habits\""),
    )
    .unwrap();
    ok(&s, d, &["apps", "create", "habits"]);
    let out = ok(&s, d, &["deploy", "--image", "busybox"]);
    assert!(out.contains("v1 deployed successfully"), "{out}");

    // Each command group, with no -a.
    let st = json(&s, d, &["status", "--json"]);
    assert_eq!(st["name"], "habits", "{st}");
    assert!(ok(&s, d, &["status"]).contains("habits"));
    assert!(ok(&s, d, &["releases"]).contains("v1"));
    ok(&s, d, &["logs", "--no-tail"]);
    let out = ok(&s, d, &["secrets", "set", "--stage", "FROM_TOML=yes"]);
    assert!(out.contains("FROM_TOML") || out.contains("staged"), "{out}");
    assert!(ok(&s, d, &["secrets", "list"]).contains("FROM_TOML"));
    // The size, and what it costs for 30 days at the server's prices.
    let out = ok(&s, d, &["scale", "show"]);
    assert!(out.contains("app") && out.contains("$1.94 each"), "{out}");
    let machines = json(&s, d, &["machine", "list", "--json"]);
    let started = machines
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["state"] == "started")
        .unwrap_or_else(|| panic!("a started machine: {machines}"));
    let id = started["id"].as_str().unwrap().to_string();
    assert!(ok(&s, d, &["machine", "status", &id]).contains(&id));
    assert!(ok(&s, d, &["ips", "list"]).contains("shared"));
    assert!(ok(&s, d, &["certs", "list"]).contains("habits.localhost"));
    assert!(ok(&s, d, &["certs", "show", "habits.localhost"]).contains("habits.localhost"));
    assert!(ok(&s, d, &["config", "show"]).contains("habits"));
    let out = ok(&s, d, &["apps", "restart"]);
    assert!(out.contains("Restarted 1 machine(s) of habits"), "{out}");
    let out = ok(&s, d, &["releases", "rollback", "1", "-y"]);
    assert!(out.contains("deployed successfully"), "{out}");

    // `open` prints the app's URL (no browser here).
    let out = s
        .command(&["open", "/admin?x=1"])
        .current_dir(d)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("BROWSER")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "opening https://habits.localhost:{}/admin?x=1 ...",
            s.https_port
        )
    );

    // A clone of the machine, found through fly.toml too.
    let out = ok(&s, d, &["machine", "clone", &id, "--name", "twin"]);
    assert!(out.contains("successfully cloned"), "{out}");
    let machines = json(&s, d, &["machine", "list", "--json"]);
    let twin = machines
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "twin")
        .unwrap_or_else(|| panic!("the clone: {machines}"));
    assert_eq!(twin["state"], "started");
    assert_eq!(twin["region"], started["region"]);
    assert_eq!(twin["config"]["init"], started["config"]["init"]);
    assert_ne!(twin["id"], started["id"]);
    let e = fails(&s, d, &["machine", "clone", "0000000000dead"]);
    assert!(e.contains("Error:"), "{e}");

    // No -a and no fly.toml: the error says both ways.
    let empty = tempfile::tempdir().unwrap();
    let e = fails(&s, empty.path(), &["status"]);
    assert!(
        e.contains("-a APP") && e.contains("fly.toml") && e.contains("-c/--config"),
        "{e}"
    );
    // A fly.toml that names no app says so.
    std::fs::write(empty.path().join("fly.toml"), "[env]\nA = \"1\"\n").unwrap();
    let e = fails(&s, empty.path(), &["releases"]);
    assert!(e.contains("set app ="), "{e}");
}

#[tokio::test]
async fn config_names_another_file_and_dash_a_overrides_its_app() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("fly.toml"),
        PROC_TOML.replace("\"proc\"", "\"main-app\""),
    )
    .unwrap();
    std::fs::write(
        d.join("fly.dev.toml"),
        PROC_TOML.replace("\"proc\"", "\"dev-app\""),
    )
    .unwrap();
    ok(&s, d, &["apps", "create", "main-app"]);
    ok(&s, d, &["apps", "create", "dev-app"]);
    ok(&s, d, &["apps", "create", "dev-app-2"]);
    // The file in the current directory, by its bare name.
    let out = ok(
        &s,
        d,
        &["deploy", "--config", "fly.dev.toml", "--image", "busybox"],
    );
    assert!(out.contains("v1 deployed successfully"), "{out}");
    let st = json(&s, d, &["status", "-c", "fly.dev.toml", "--json"]);
    assert_eq!(st["name"], "dev-app", "{st}");
    // -a wins over the file's app.
    let out = ok(
        &s,
        d,
        &[
            "deploy",
            "-a",
            "dev-app-2",
            "--config",
            "fly.dev.toml",
            "--image",
            "busybox",
        ],
    );
    assert!(out.contains("v1 deployed successfully"), "{out}");
    let st = json(&s, d, &["status", "-a", "dev-app-2", "--json"]);
    assert_eq!(st["name"], "dev-app-2", "{st}");
    assert!(!st["machines"].as_array().unwrap().is_empty(), "{st}");
    // A directory works as well as a file.
    let st = json(
        &s,
        Path::new("/"),
        &["status", "-c", d.to_str().unwrap(), "--json"],
    );
    assert_eq!(st["name"], "main-app", "{st}");
}

/// Runs the CLI with a config file of its own and no token in the environment.
fn cli_alone(s: &TestServer, config: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut cmd = s.command(args);
    cmd.env("HANGAR_CONFIG", config)
        .env_remove("HANGAR_API_TOKEN");
    with_stdin(cmd, stdin)
}

#[tokio::test]
async fn version_and_auth_token_login_logout() {
    let s = TestServer::start().await;
    let out = s.cli(&["version"]);
    assert!(
        stdout(&out).starts_with(&format!("hangar v{}", env!("CARGO_PKG_VERSION"))),
        "{}",
        stdout(&out)
    );
    let v: Value = serde_json::from_str(&stdout(&s.cli(&["version", "--json"]))).unwrap();
    assert_eq!(v["Name"], "hangar");
    assert_eq!(v["OS"], "linux");
    assert!(v["Commit"].as_str().is_some_and(|c| !c.is_empty()), "{v}");

    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("hangar.toml");
    // No token anywhere: `auth token` says how to get one.
    let out = cli_alone(&s, &config, &["auth", "token"], "");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("hangar auth login"),
        "{}",
        stderr(&out)
    );
    // A wrong token is refused and not kept.
    let out = cli_alone(
        &s,
        &config,
        &["auth", "login", "--access-token", "nope"],
        "",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("did not accept the token"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("nope"), "the token is not echoed");
    assert!(!config.exists(), "nothing kept");
    // The right one, from standard input, is checked and kept (0600).
    let out = cli_alone(&s, &config, &["auth", "login"], &format!("{}\n", s.token));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("admin@personal"), "{}", stdout(&out));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = cli_alone(&s, &config, &["auth", "token"], "");
    assert_eq!(stdout(&out).trim(), s.token);
    let out = cli_alone(&s, &config, &["apps", "list"], "");
    assert!(
        out.status.success(),
        "the kept token is used: {}",
        stderr(&out)
    );
    // --access-token works as well.
    let out = cli_alone(
        &s,
        &config,
        &["auth", "login", "--access-token", &s.token],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Logged out: the token is gone and commands say how to log in.
    let out = cli_alone(&s, &config, &["auth", "logout"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli_alone(&s, &config, &["apps", "list"], "");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("hangar auth login"),
        "{}",
        stderr(&out)
    );
}
