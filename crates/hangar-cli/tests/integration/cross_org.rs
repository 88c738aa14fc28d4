//! Two orgs on containerd, one network each: a machine of org B gets NXDOMAIN for org
//! A's names and reaches neither A's machines nor A's Flycast address, while its own
//! names resolve; B's token can open neither `hangar proxy` nor `hangar ssh console`
//! into A's app, and A's token none into B's.

use std::process::Command;

use serde_json::json;

use crate::containerd::{run, setup_with};
use crate::harness::{eventually, free_port, stderr, TestServer};

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Runs `args` inside machine `id`'s network namespace (as the machine would).
fn in_machine(id: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("hangar-{id}")])
        .args(args)
        .output()
        .expect("run in the machine's namespace");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn as_org(
    s: &TestServer,
    token: &str,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> crate::harness::Res {
    s.raw(
        method,
        path,
        &body.to_string(),
        Some(&format!("Bearer {token}")),
    )
    .await
}

fn cli_as(s: &TestServer, token: &str, args: &[&str]) -> std::process::Output {
    s.command(args)
        .env("HANGAR_API_TOKEN", token)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run hangar")
}

#[tokio::test(flavor = "multi_thread")]
async fn orgs_cannot_resolve_or_reach_each_other() {
    let Some((_reg, s, image)) = setup_with("xo-a", &[]).await else {
        return;
    };
    let web = json!({"image": image,
        "files": [{"guest_path": "/www/index.html", "raw_value": b64("org a\n")}],
        "init": {"exec": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]},
        "services": [{"protocol": "tcp", "internal_port": 8080,
            "ports": [{"port": 80, "handlers": ["http"]}]}]});
    let a = run(&s, "xo-a", web).await;
    s.wait_state("xo-a", &a, "started").await;
    let a_ip = s.machine("xo-a", &a).await["private_ip"]
        .as_str()
        .unwrap()
        .to_string();
    let out = s.cli(&["ips", "allocate-v6", "--private", "-a", "xo-a", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let flycast: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let flycast = flycast["ip"].as_str().unwrap().to_string();

    // Org B, its app and a machine, all with B's token.
    let out = s.cli(&["orgs", "create", "Other", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let b_token = created["token"].as_str().unwrap().to_string();
    let r = as_org(
        &s,
        &b_token,
        "POST",
        "/apps",
        json!({"app_name": "xo-b", "org_slug": "other"}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = as_org(
        &s,
        &b_token,
        "POST",
        "/apps/xo-b/machines",
        json!({"config": {"image": image, "init": {"exec": ["/bin/sleep", "3600"]}}}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let b = r.body["id"].as_str().unwrap().to_string();
    let r = as_org(
        &s,
        &b_token,
        "GET",
        &format!("/apps/xo-b/machines/{b}/wait?state=started&timeout=30"),
        json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let b_ip = r.body["private_ip"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // B's resolver knows B, not A.
    let own = eventually(10, "xo-b.internal resolves in org B", || {
        let b = b.clone();
        async move {
            let out = in_machine(&b, &["dig", "+short", "@fdaa::3", "xo-b.internal", "AAAA"]);
            out.contains("fdaa:0:2:").then_some(out)
        }
    })
    .await;
    assert!(own.contains("fdaa:0:2:"), "{own} (b is {b_ip})");
    for name in [
        "xo-a.internal",
        &format!("{a}.vm.xo-a.internal"),
        "xo-a.flycast",
    ] {
        let answer = in_machine(&b, &["dig", "@fdaa::3", name, "AAAA"]);
        assert!(answer.contains("status: NXDOMAIN"), "{name}: {answer}");
    }
    // Nor can it reach A by address, over 6PN or Flycast.
    for url in [
        format!("http://[{a_ip}]:8080/"),
        format!("http://[{flycast}]/"),
    ] {
        let got = in_machine(&b, &["curl", "-sS", "-m", "3", "-g", &url]);
        assert!(!got.contains("org a"), "{url} reached from org B: {got}");
    }
    // A's own machines still can.
    let from_a = in_machine(
        &a,
        &[
            "curl",
            "-sS",
            "-m",
            "3",
            "-g",
            &format!("http://[{flycast}]/"),
        ],
    );
    assert_eq!(from_a, "org a\n");

    // Tokens of one org open nothing into the other.
    let port = free_port().to_string();
    for (token, args) in [
        (b_token.as_str(), vec!["proxy", port.as_str(), "-a", "xo-a"]),
        (
            b_token.as_str(),
            vec!["ssh", "console", "-a", "xo-a", "-C", "true"],
        ),
        (
            s.token.as_str(),
            vec!["ssh", "console", "-a", "xo-b", "-C", "true"],
        ),
        (s.token.as_str(), vec!["proxy", port.as_str(), "-a", "xo-b"]),
    ] {
        let out = cli_as(&s, token, &args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr(&out).contains("not of the org that holds this"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(
        std::net::TcpListener::bind(format!("127.0.0.1:{port}")).is_ok(),
        "a refused proxy leaves nothing listening"
    );
}
