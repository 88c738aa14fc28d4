//! `hangar tokens debug|attenuate`, offline: a macaroon token's caveats shown as JSON,
//! and a narrower token made from a caveats file that still verifies under the key
//! that signed the original and allows no more than the file says.

use std::process::Command;

use hangar_macaroon::{allows, Access, Action, Caveat, Macaroon, LOCATION};

use crate::harness::{stderr, stdout, HANGAR};

const KEY: &[u8] = b"a test root key, 32 bytes long..";

fn hangar(args: &[&str]) -> std::process::Output {
    Command::new(HANGAR)
        .args(args)
        .env_remove("HANGAR_API_TOKEN")
        .env_remove("FLY_API_TOKEN")
        .output()
        .expect("run hangar")
}

#[test]
fn tokens_are_shown_and_narrowed_offline() {
    let mut m = Macaroon::mint(KEY, b"kid-7", [3; 16], LOCATION);
    m.add(&Caveat::Organization {
        id: 4,
        mask: Action::ALL,
    });
    let token = format!("FlyV1 {}", m.encode());

    let out = hangar(&["tokens", "debug", "-t", &token]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown[0]["kid"], "6b69642d37");
    assert_eq!(shown[0]["caveats"][0]["type"], "Organization");
    assert_eq!(shown[0]["caveats"][0]["body"]["id"], 4);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("caveats.json");
    std::fs::write(
        &file,
        r#"[{"type": "Apps", "body": {"apps": {"12": "r"}}}]"#,
    )
    .unwrap();
    let out = hangar(&[
        "tokens",
        "attenuate",
        "-f",
        file.to_str().unwrap(),
        "-t",
        &token,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let narrowed = stdout(&out);
    let narrowed = narrowed.trim().strip_prefix("FlyV1 ").unwrap();
    let caveats = Macaroon::decode(narrowed).unwrap().verify(KEY).unwrap();
    let at = |action, app| Access {
        action,
        org_id: 4,
        app_id: Some(app),
        ..Default::default()
    };
    assert!(allows(&caveats, &at(Action::READ, 12)).is_ok());
    assert!(allows(&caveats, &at(Action::WRITE, 12)).is_err());
    assert!(allows(&caveats, &at(Action::READ, 13)).is_err());

    // Bad input says what is wrong.
    std::fs::write(&file, r#"[{"type": "Apps", "body": {"apps": {"x": "r"}}}]"#).unwrap();
    let out = hangar(&[
        "tokens",
        "attenuate",
        "-f",
        file.to_str().unwrap(),
        "-t",
        &token,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a number"), "{}", stderr(&out));
    let out = hangar(&["tokens", "debug", "-t", "opaque-token"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("holds no macaroon"),
        "{}",
        stderr(&out)
    );
}
