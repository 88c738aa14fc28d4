//! The format against fixed bytes, tokens minted, narrowed and checked, and what the
//! caveats allow.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use crate::*;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn org_token(org: u64) -> Macaroon {
    let mut m = Macaroon::mint(KEY, b"kid-1", [7; 16], LOCATION);
    m.add(&Caveat::Organization {
        id: org,
        mask: Action::ALL,
    });
    m
}

fn access(action: Action, org: u64, app: Option<u64>) -> Access {
    Access {
        action,
        org_id: org,
        app_id: app,
        now: 1_800_000_000,
        ..Default::default()
    }
}

/// The bytes of the token after the base64.
fn raw(token: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(token.strip_prefix("fm2_").unwrap())
        .unwrap()
}

#[test]
fn caveats_are_written_as_gos_encoder_writes_them() {
    let mut m = Macaroon::mint(KEY, &[1, 2, 3], [0; 16], "loc");
    m.add(&Caveat::Organization {
        id: 123,
        mask: Action(31),
    });
    m.add(&Caveat::IsMember);
    let b = raw(&m.encode());
    // [nonce [bin kid, bin rnd, false], "loc", [0, [123, 31], 22, []], bin32]
    assert_eq!(&b[..6], &[0x94, 0x93, 0xc4, 3, 1, 2]);
    assert_eq!(&b[6..9], &[3, 0xc4, 16]);
    let after_nonce = 9 + 16;
    assert_eq!(b[after_nonce], 0xc2);
    assert_eq!(
        &b[after_nonce + 1..after_nonce + 5],
        &[0xa3, b'l', b'o', b'c']
    );
    assert_eq!(
        &b[after_nonce + 5..after_nonce + 12],
        &[0x94, 0x00, 0x92, 0x7b, 0x1f, 0x16, 0x90]
    );
    assert_eq!(&b[after_nonce + 12..after_nonce + 14], &[0xc4, 32]);
    assert_eq!(b.len(), after_nonce + 14 + 32);
    let mut m = Macaroon::mint(KEY, &[1], [0; 16], "l");
    m.add(&Caveat::Mutations(vec!["foo".into()]));
    let b = raw(&m.encode());
    assert_eq!(
        &b[b.len() - 34 - 8..b.len() - 34],
        &[0x92, 0x06, 0x91, 0x91, 0xa3, b'f', b'o', b'o']
    );
    // Maps are written with sorted keys, numbers as small as they go.
    let mut apps = BTreeMap::new();
    apps.insert(300, Action::READ);
    apps.insert(2, Action(3));
    let mut m = Macaroon::mint(KEY, &[1], [0; 16], "l");
    m.add(&Caveat::Apps(apps));
    let b = raw(&m.encode());
    let caveat = &b[b.len() - 34 - 10..b.len() - 34];
    assert_eq!(
        caveat,
        &[0x92, 0x03, 0x91, 0x82, 0x02, 0x03, 0xcd, 0x01, 0x2c, 0x01]
    );
}

#[test]
fn a_minted_token_verifies_and_a_narrowed_one_still_does() {
    let token = org_token(5).encode();
    let m = Macaroon::decode(&token).unwrap();
    assert_eq!(m.nonce.kid, b"kid-1");
    assert_eq!(m.location, LOCATION);
    let caveats = m.verify(KEY).unwrap();
    assert!(allows(&caveats, &access(Action::ALL, 5, Some(9))).is_ok());
    assert!(allows(&caveats, &access(Action::READ, 6, None)).is_err());

    // Narrowed offline: read-only on app 9.
    let mut narrowed = Macaroon::decode(&token).unwrap();
    narrowed.add(&Caveat::Apps(BTreeMap::from([(9, Action::READ)])));
    let narrowed = Macaroon::decode(&narrowed.encode()).unwrap();
    let caveats = narrowed.verify(KEY).unwrap();
    assert_eq!(caveats.len(), 2);
    assert!(allows(&caveats, &access(Action::READ, 5, Some(9))).is_ok());
    let write = allows(&caveats, &access(Action::WRITE, 5, Some(9))).unwrap_err();
    assert!(write.contains("allows only \"r\""), "{write}");
    assert!(allows(&caveats, &access(Action::READ, 5, Some(10))).is_err());
    let orgwide = allows(&caveats, &access(Action::READ, 5, None)).unwrap_err();
    assert!(orgwide.contains("limited to a app"), "{orgwide}");
    // The same caveat twice is one caveat.
    let mut again = narrowed.clone();
    again.add(&Caveat::Apps(BTreeMap::from([(9, Action::READ)])));
    assert_eq!(again, narrowed);
}

#[test]
fn a_wrong_key_or_a_dropped_caveat_fails() {
    let mut m = org_token(5);
    assert_eq!(
        m.verify(b"another key").unwrap_err(),
        TokenError::BadSignature
    );
    m.add(&Caveat::Action(Action::READ));
    // Dropping the last caveat (keeping the tail) breaks the chain.
    let token = m.encode();
    let mut b = raw(&token);
    // [.., 0x94 -> 0x92 caveats array, without the Action caveat (type 26, body 1)]
    let at = b.windows(3).position(|w| w == [0x94, 0x00, 0x92]).unwrap();
    b[at] = 0x92;
    let end = b.len() - 34;
    let pos = b[..end]
        .windows(2)
        .rposition(|w| w == [0x1a, 0x01])
        .unwrap();
    b.drain(pos..pos + 2);
    use base64::Engine;
    let forged = format!(
        "fm2_{}",
        base64::engine::general_purpose::STANDARD.encode(&b)
    );
    let forged = Macaroon::decode(&forged).unwrap();
    assert_eq!(forged.verify(KEY).unwrap_err(), TokenError::BadSignature);
    for junk in ["", "fo1_abc", "fm2_!!!", "fm2_AAAA", "Bearer x"] {
        assert!(Macaroon::decode(junk).is_err(), "{junk}");
    }
}

#[test]
fn caveats_say_what_they_allow() {
    let a = |action| access(action, 1, Some(7));
    let window = Caveat::ValidityWindow {
        not_before: 1_700_000_000,
        not_after: 1_900_000_000,
    };
    assert_eq!(window.check(&a(Action::READ)), Verdict::Allowed);
    let mut late = a(Action::READ);
    late.now = 2_000_000_000;
    assert!(matches!(window.check(&late), Verdict::Denied(w) if w.contains("expired")));

    // Deploy-style: the app's everything, read elsewhere.
    let deploy = Caveat::IfPresent {
        ifs: vec![Caveat::Apps(BTreeMap::from([(7, Action::ALL)]))],
        otherwise: Action::READ,
    };
    assert_eq!(deploy.check(&a(Action::DELETE)), Verdict::Allowed);
    assert_eq!(
        deploy.check(&access(Action::READ, 1, None)),
        Verdict::Allowed
    );
    assert!(matches!(
        deploy.check(&access(Action::CREATE, 1, None)),
        Verdict::Denied(_)
    ));
    assert!(matches!(
        deploy.check(&access(Action::READ, 1, Some(8))),
        Verdict::Denied(_)
    ));

    let exec = Caveat::Commands(vec![
        Command {
            args: vec!["ls".into()],
            exact: false,
        },
        Command {
            args: vec!["df".into(), "-h".into()],
            exact: true,
        },
    ]);
    let run = |argv: &[&str]| {
        let mut x = a(Action::CONTROL);
        x.command = Some(argv.iter().map(|s| s.to_string()).collect());
        exec.check(&x)
    };
    assert_eq!(run(&["ls", "-la"]), Verdict::Allowed);
    assert_eq!(run(&["df", "-h"]), Verdict::Allowed);
    assert!(matches!(run(&["df", "-h", "/"]), Verdict::Denied(_)));
    assert!(matches!(
        exec.check(&a(Action::READ)),
        Verdict::Unspecified(_)
    ));

    let wildcard = Caveat::Apps(BTreeMap::from([(0, Action::READ)]));
    assert_eq!(wildcard.check(&a(Action::READ)), Verdict::Allowed);
    let mixed = Caveat::Apps(BTreeMap::from([(0, Action::READ), (7, Action::ALL)]));
    assert!(matches!(mixed.check(&a(Action::READ)), Verdict::Denied(_)));
    let unknown = Caveat::from_msgpack(11, &rmpv::Value::Nil).unwrap();
    assert!(matches!(
        unknown.check(&a(Action::READ)),
        Verdict::Denied(_)
    ));

    let mut admin = a(Action::READ);
    admin.feature = Some("membership".into());
    assert_eq!(Caveat::IsMember.check(&admin), Verdict::Allowed);
    admin.action = Action::WRITE;
    assert!(matches!(Caveat::IsMember.check(&admin), Verdict::Denied(_)));
}

#[test]
fn caveats_read_and_write_the_json_of_tokens_attenuate() {
    let all = vec![
        Caveat::Organization {
            id: 12,
            mask: Action::parse("rwcdC").unwrap(),
        },
        Caveat::Apps(BTreeMap::from([(3, Action::READ)])),
        Caveat::Machines(BTreeMap::from([("e2865".to_string(), Action(17))])),
        Caveat::ValidityWindow {
            not_before: 1,
            not_after: 2,
        },
        Caveat::Mutations(vec!["addWireGuardPeer".into()]),
        Caveat::Commands(vec![Command {
            args: vec!["ls".into()],
            exact: true,
        }]),
        Caveat::IfPresent {
            ifs: vec![Caveat::FeatureSet(BTreeMap::from([(
                "wg".to_string(),
                Action::ALL,
            )]))],
            otherwise: Action::READ,
        },
        Caveat::Action(Action::READ),
        Caveat::IsUser(42),
        Caveat::IsMember,
    ];
    for c in &all {
        let json = c.to_json();
        let back = Caveat::from_json(&json).unwrap();
        // `*` reads back as every action; what is written is the letters.
        let (k1, b1) = c.to_msgpack();
        let (k2, b2) = back.to_msgpack();
        assert_eq!(k1, k2, "{json}");
        if !matches!(c, Caveat::IfPresent { .. }) {
            assert_eq!(b1, b2, "{json}");
        }
        let (kind, body) = c.to_msgpack();
        assert_eq!(&Caveat::from_msgpack(kind, &body).unwrap(), c);
    }
    assert_eq!(
        all[1].to_json(),
        serde_json::json!({"type": "Apps", "body": {"apps": {"3": "r"}}})
    );
    let bad = serde_json::json!({"type": "Apps", "body": {"apps": {"x": "r"}}});
    assert!(Caveat::from_json(&bad).is_err());
    let bad = serde_json::json!({"type": "Action", "body": "rwz"});
    assert!(Caveat::from_json(&bad).is_err());
}
