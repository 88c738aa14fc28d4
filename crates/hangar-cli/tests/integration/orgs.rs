//! Several orgs on one control plane: the admin token creates one and gets its first
//! token; with it apps are created and run in the new org, which the personal org's
//! token cannot see (nor the new org's token the personal apps); only the admin token
//! manages orgs; an org with apps is not removed; a removed org's token stops working.

use crate::harness::{stderr, stdout, TestServer};

fn with_token(s: &TestServer, token: &str, args: &[&str]) -> std::process::Output {
    s.command(args)
        .env("HANGAR_API_TOKEN", token)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run hangar")
}

#[tokio::test]
async fn orgs_keep_their_apps_and_tokens_apart() {
    let s = TestServer::start().await;
    s.create_app("mine").await;
    let out = s.cli(&["orgs", "create", "Acme Corp", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["slug"], "acme-corp");
    assert_eq!(created["numeric_id"], 2);
    let acme = created["token"].as_str().unwrap().to_string();

    let out = with_token(
        &s,
        &acme,
        &["apps", "create", "anvil", "--org", "acme-corp"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r = s
        .raw("GET", "/apps/anvil", "", Some(&format!("Bearer {acme}")))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["organization"]["slug"], "acme-corp", "{r:?}");

    // Each token sees its own org's apps only.
    let r = s.call("GET", "/apps/anvil", None).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.body["error"], "unauthorized", "Fly's answer: {r:?}");
    let r = s
        .raw("GET", "/apps/mine", "", Some(&format!("Bearer {acme}")))
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    let out = s.cli(&["status", "-a", "anvil"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not of the org that holds this"),
        "{}",
        stderr(&out)
    );
    let out = with_token(&s, &acme, &["apps", "list", "--org", "personal"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    let out = s.cli(&["apps", "create", "sneaky", "--org", "acme-corp"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));

    // Only the admin token manages orgs; an org's token sees its own.
    let out = with_token(&s, &acme, &["orgs", "create", "Other"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("only the admin token"),
        "{}",
        stderr(&out)
    );
    let out = with_token(&s, &acme, &["orgs", "list", "--json"]);
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen.as_array().map(Vec::len), Some(1), "{seen}");
    let out = s.cli(&["orgs", "list"]);
    assert!(stdout(&out).contains("acme-corp") && stdout(&out).contains("personal"));
    let out = with_token(&s, &acme, &["orgs", "show", "personal"]);
    assert!(!out.status.success());

    // Bad input.
    for (args, says) in [
        (vec!["orgs", "create", "Acme Corp"], "exists already"),
        (
            vec!["orgs", "create", "x", "--slug", "9lives"],
            "invalid org slug",
        ),
        (
            vec!["orgs", "destroy", "acme-corp", "--yes"],
            "still has 1 app",
        ),
        (
            vec!["orgs", "destroy", "personal", "--yes"],
            "cannot be removed",
        ),
        (vec!["orgs", "destroy", "acme-corp"], "--yes"),
    ] {
        let out = s.cli(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }

    let out = with_token(&s, &acme, &["apps", "destroy", "anvil", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.cli(&["orgs", "destroy", "acme-corp", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = s
        .raw(
            "GET",
            "/apps?org_slug=acme-corp",
            "",
            Some(&format!("Bearer {acme}")),
        )
        .await;
    assert_eq!(r.status, 401, "a removed org's token stops working: {r:?}");
}
