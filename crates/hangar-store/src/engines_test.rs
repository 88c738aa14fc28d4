//! Every query of the store, run on SQLite and on PostgreSQL: the rows read back are the
//! rows written, and the rules the schema keeps (unique names, one holder of a dedicated
//! address, cascades) hold on both engines.

#![allow(clippy::unwrap_used)]

use crate::sql::args;
use crate::*;

fn org() -> OrgRecord {
    OrgRecord {
        slug: "personal".into(),
        name: "Personal".into(),
        numeric_id: 1,
    }
}

fn app(name: &str) -> AppRecord {
    AppRecord {
        id: format!("id-{name}"),
        name: name.into(),
        org_slug: "personal".into(),
        network: "default".into(),
        created_at_ms: 1_700_000_000_000,
        machine_count: 0,
        org_numeric_id: 1,
    }
}

fn apps_and_tokens(db: &mut Db<'_>) -> Result<()> {
    assert!(db.ensure_org(&org(), "t")?);
    assert!(
        !db.ensure_org(&org(), "t")?,
        "a second ensure changes nothing"
    );
    assert_eq!(db.orgs()?, vec![org()]);
    assert_eq!(db.org("personal")?, Some(org()));
    assert_eq!(db.org("nope")?, None);
    let token = TokenRecord {
        id: "tok1".into(),
        org_slug: "personal".into(),
        name: "admin".into(),
        kind: "admin".into(),
    };
    db.insert_token(&token, "digest", "t")?;
    assert_eq!(db.token_count()?, 1);
    assert_eq!(db.token_by_digest("digest")?, Some(token));
    assert_eq!(db.token_by_digest("other")?, None);
    db.insert_app(&app("web"))?;
    let dup = db.insert_app(&app("web")).unwrap_err();
    assert!(dup.is_unique_violation(), "{dup}");
    db.insert_app(&app("api"))?;
    assert_eq!(db.app("web")?, Some(app("web")));
    let names: Vec<String> = db
        .apps_in_org("personal")?
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["api", "web"]);

    let acme_token = TokenRecord {
        id: "tok2".into(),
        org_slug: "acme".into(),
        name: "first".into(),
        kind: "org".into(),
    };
    let acme = db
        .create_org("acme", "Acme", &acme_token, "digest2", "t")?
        .unwrap();
    assert_eq!(acme.numeric_id, 2);
    assert!(db
        .create_org("acme", "Again", &acme_token, "digest3", "t")?
        .is_none());
    assert_eq!(db.token_by_digest("digest2")?, Some(acme_token));
    let mut in_acme = app("anvil");
    in_acme.org_slug = "acme".into();
    db.insert_app(&in_acme)?;
    let busy = db.delete_org("acme").unwrap_err();
    assert!(busy.to_string().contains("still has 1 app"), "{busy}");
    assert!(db.delete_app("anvil")?);
    assert!(db.delete_org("acme")?);
    assert_eq!(db.token_by_digest("digest2")?, None);
    assert!(!db.delete_org("acme")?);
    Ok(())
}

fn leases_and_keys(db: &mut Db<'_>) -> Result<()> {
    let m = MachineRecord {
        id: "m1".into(),
        app_name: "web".into(),
        name: "m1".into(),
        region: "ord".into(),
        state: hangar_types::MachineState::Created,
        instance_id: "v1".into(),
        private_ip: "fdaa::2".into(),
        config: serde_json::from_value(serde_json::json!({"image": "busybox"}))?,
        cordoned: false,
        created_at: "t".into(),
        updated_at: "t".into(),
        runtime: None,
    };
    let launch = hangar_types::MachineEvent {
        id: "e1".into(),
        kind: hangar_types::EventKind::Launch,
        status: "created".into(),
        source: "user".into(),
        timestamp: 1,
        request: Some(serde_json::json!({"config": {}})),
    };
    db.insert_machine(&m, &launch)?;
    assert_eq!(db.machine("web", "m1")?, Some(m.clone()));
    assert_eq!(db.events("m1", 10)?, vec![launch]);
    use hangar_types::observed::MachineChange;
    db.apply_changes(&[MachineChange::Cordoned {
        machine_id: "m1".into(),
        cordoned: true,
        at: "t2".into(),
    }])?;
    assert!(db.machine_by_id("m1")?.unwrap().cordoned);
    assert_eq!(db.live_machines_of_app("web")?.len(), 1);
    assert_eq!(db.app("web")?.unwrap().machine_count, 1);
    let mut config = m.config.clone();
    config.image = "busybox:2".into();
    db.apply_changes(&[MachineChange::ConfigInPlace {
        machine_id: "m1".into(),
        config: Box::new(config),
        at: "t3".into(),
    }])?;
    assert_eq!(db.versions("m1")?[0].1.image, "busybox:2");
    assert_eq!(db.reserved_memory_mb()?, 256, "the default memory, created");
    let mut bigger = m.config.clone();
    bigger.guest = Some(hangar_types::machine_config::MachineGuest {
        memory_mb: Some(1024),
        ..Default::default()
    });
    db.apply_changes(&[MachineChange::ConfigInPlace {
        machine_id: "m1".into(),
        config: Box::new(bigger),
        at: "t4".into(),
    }])?;
    assert_eq!(db.reserved_memory_mb()?, 1024, "a config change re-sizes");
    let stop = |state: hangar_types::MachineState, id: &str| MachineChange::Transition {
        machine_id: "m1".into(),
        state,
        runtime: None,
        event: hangar_types::MachineEvent {
            id: id.into(),
            kind: hangar_types::EventKind::Stop,
            status: state.as_str().into(),
            source: "user".into(),
            timestamp: 2,
            request: None,
        },
        at: "t5".into(),
    };
    db.apply_changes(&[stop(hangar_types::MachineState::Stopped, "held1")])?;
    assert_eq!(db.reserved_memory_mb()?, 0, "a stopped machine holds none");
    db.apply_changes(&[stop(hangar_types::MachineState::Created, "held2")])?;

    let lease = LeaseRecord {
        machine_id: "m1".into(),
        nonce: "n1".into(),
        owner: "me".into(),
        description: "deploy".into(),
        expires_at: 100,
    };
    db.put_lease(&lease)?;
    assert_eq!(db.active_lease("m1", 50)?, Some(lease.clone()));
    assert_eq!(db.active_lease("m1", 150)?, None, "expired");
    db.put_lease(&LeaseRecord {
        nonce: "n2".into(),
        ..lease
    })?;
    assert_eq!(db.active_lease("m1", 50)?.unwrap().nonce, "n2");
    assert!(db.delete_lease("m1")?);
    assert!(!db.delete_lease("m1")?);

    let response = IdempotentResponse {
        request_sha256: "sha".into(),
        status: 201,
        body: b"{\"id\":\"m1\"}".to_vec(),
    };
    db.put_idempotent_response("web", "key", &response, 10, 0)?;
    db.put_idempotent_response("web", "key", &response, 11, 0)?;
    assert_eq!(
        db.idempotent_response("web", "key", 5)?,
        Some(response.clone())
    );
    assert_eq!(db.idempotent_response("web", "key", 20)?, None);
    Ok(())
}

fn edge(db: &mut Db<'_>) -> Result<()> {
    let template = IpRecord {
        app_name: "web".into(),
        ip: String::new(),
        kind: "v4".into(),
        region: "global".into(),
        shared: false,
        network: None,
        service_name: None,
        created_at: "t".into(),
    };
    let first = db
        .assign_ip(
            &template,
            &mut ["10.0.0.1", "10.0.0.2"].map(String::from).into_iter(),
        )?
        .unwrap();
    assert_eq!(first.ip, "10.0.0.1");
    let api = IpRecord {
        app_name: "api".into(),
        ..template.clone()
    };
    let second = db
        .assign_ip(
            &api,
            &mut ["10.0.0.1", "10.0.0.2"].map(String::from).into_iter(),
        )?
        .unwrap();
    assert_eq!(second.ip, "10.0.0.2", "a dedicated address has one holder");
    assert_eq!(
        db.assign_ip(&api, &mut ["10.0.0.1"].map(String::from).into_iter())?,
        None
    );
    let shared = IpRecord {
        ip: "127.0.0.1".into(),
        shared: true,
        network: Some("default".into()),
        ..template
    };
    db.assign_shared_ip(&shared)?;
    db.assign_shared_ip(&shared)?;
    assert_eq!(db.ips_of_app("web")?.len(), 2);
    assert_eq!(db.all_ips()?.len(), 3);
    assert!(db.release_ip("web", "10.0.0.1")?);

    let cert = CertRecord {
        hostname: "www.example.com".into(),
        app_name: "web".into(),
        authority: "dev".into(),
        status: "pending".into(),
        chain_pem: None,
        key_pem: None,
        issuer: None,
        expires_at: None,
        last_error: Some("not yet".into()),
        created_at: "t".into(),
        updated_at: "t".into(),
    };
    assert!(db.insert_certificate(&cert)?);
    assert!(!db.insert_certificate(&cert)?);
    let issued = CertRecord {
        status: "ready".into(),
        chain_pem: Some("chain".into()),
        key_pem: Some("key".into()),
        ..cert.clone()
    };
    db.update_certificate(&issued)?;
    assert_eq!(db.certificate("www.example.com")?, Some(issued.clone()));
    db.replace_certificate(&CertRecord {
        authority: "acme".into(),
        ..issued
    })?;
    let now = db.certificate("www.example.com")?.unwrap();
    assert_eq!((now.authority.as_str(), now.last_error), ("acme", None));
    assert_eq!(db.certificates_of_app("web")?.len(), 1);
    assert_eq!(db.all_certificates()?.len(), 1);
    assert!(db.delete_certificate("web", "www.example.com")?);
    Ok(())
}

fn secrets_and_releases(db: &mut Db<'_>) -> Result<()> {
    assert_eq!(db.secrets_version("web")?, 0);
    let v1 = db.change_secrets(
        "web",
        &[
            ("A".into(), Some((vec![0, 1, 255], "da".into()))),
            ("B".into(), Some((vec![2], "db".into()))),
        ],
        false,
        "t",
    )?;
    let v2 = db.change_secrets("web", &[("B".into(), None)], false, "t2")?;
    assert_eq!((v1, v2), (1, 2));
    let secrets = db.secrets("web")?;
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].sealed, vec![0, 1, 255]);

    use hangar_types::deploy::ReleaseStatus;
    let release = |status: ReleaseStatus| ReleaseRecord {
        id: format!("rel-{status}"),
        app_name: "web".into(),
        version: 0,
        image: "img".into(),
        definition: "{}".into(),
        secrets_version: 2,
        secrets: vec![9, 9],
        strategy: hangar_types::deploy::DeployStrategy::Rolling,
        status,
        description: "deploy".into(),
        user: "admin".into(),
        error: None,
        created_at: "t".into(),
        updated_at: "t".into(),
    };
    let first = db.create_release(release(ReleaseStatus::Complete))?;
    let second = db.create_release(release(ReleaseStatus::Running))?;
    assert_eq!((first.version, second.version), (1, 2));
    assert_eq!(db.current_release("web")?.unwrap().id, first.id);
    assert_eq!(db.unfinished_releases()?.len(), 1);
    db.set_release_status(&second.id, ReleaseStatus::Failed, Some("boom"), "t3")?;
    let failed = db.release(&second.id)?.unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.error.as_deref()),
        ("failed", Some("boom"))
    );
    assert_eq!(db.release_by_version("web", 1)?.unwrap().user, "admin");
    assert_eq!(db.releases("web", 1)?.len(), 1);
    Ok(())
}

/// An agent's changes, sent twice as after a lost answer, land once.
fn observed_changes(db: &mut Db<'_>) -> Result<()> {
    use hangar_types::observed::MachineChange;
    use hangar_types::MachineState;
    let event = |id: &str, status: &str| hangar_types::MachineEvent {
        id: id.into(),
        kind: hangar_types::EventKind::Start,
        status: status.into(),
        source: "flyd".into(),
        timestamp: 2,
        request: None,
    };
    let mut config = db.machine_by_id("m1")?.unwrap().config;
    config.image = "busybox:3".into();
    let changes = vec![
        MachineChange::Transition {
            machine_id: "m1".into(),
            state: MachineState::Started,
            runtime: Some(Some("h1".into())),
            event: event("e2", "started"),
            at: "t4".into(),
        },
        MachineChange::NewVersion {
            machine_id: "m1".into(),
            version: "v2".into(),
            config: Box::new(config),
            state: MachineState::Replacing,
            event: event("e3", "replacing"),
            at: "t5".into(),
        },
        MachineChange::Transition {
            machine_id: "gone".into(),
            state: MachineState::Started,
            runtime: None,
            event: event("e4", "started"),
            at: "t5".into(),
        },
        MachineChange::Cordoned {
            machine_id: "m1".into(),
            cordoned: false,
            at: "t6".into(),
        },
    ];
    assert_eq!(
        db.apply_changes(&changes)?,
        3,
        "the unknown machine's is dropped"
    );
    assert_eq!(
        db.apply_changes(&changes[..2])?,
        0,
        "seen events are not applied again"
    );
    let m = db.machine_by_id("m1")?.unwrap();
    assert_eq!(m.state, MachineState::Replacing);
    assert_eq!(m.instance_id, "v2");
    assert_eq!(m.runtime.as_deref(), Some("h1"));
    assert!(!m.cordoned);
    assert_eq!(db.versions("m1")?.len(), 2);
    let ids: Vec<String> = db.events("m1", 10)?.into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["held2", "held1", "e3", "e2", "e1"], "newest first");
    Ok(())
}

/// Every routable write is in the feed, in order; a cursor past the kept window reloads.
fn feed_in_commit_order(db: &mut Db<'_>) -> Result<()> {
    let head = db.feed_head()?;
    assert!(head > 0, "the writes above are in the feed");
    let FeedRead::Entries(all) = db.feed_after(0, 10_000)? else {
        panic!("nothing is pruned yet");
    };
    assert_eq!(all.last().map(|e| e.revision), Some(head));
    assert!(all.windows(2).all(|w| w[1].revision == w[0].revision + 1));
    let kinds: std::collections::BTreeSet<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["app", "certificate", "ip", "machine"]
    );
    db.delete_app("api")?;
    let FeedRead::Entries(next) = db.feed_after(head, 10)? else {
        panic!("entries");
    };
    assert_eq!(next.len(), 1);
    assert_eq!(
        (next[0].kind, next[0].subject.as_str()),
        (FeedKind::App, "api")
    );
    assert_eq!(db.feed_after(head + 1, 10)?, FeedRead::Entries(vec![]));
    db.conn
        .execute("DELETE FROM feed WHERE revision <= ?1", args![head])?;
    assert_eq!(db.feed_after(1, 10)?, FeedRead::Reload { head: head + 1 });
    Ok(())
}

/// PostgreSQL cannot hold a NUL byte in text; neither engine is given one, and the
/// error says so rather than failing as the database.
fn text_with_nul_is_refused(db: &mut Db<'_>) -> Result<()> {
    let filter = MachineFilter {
        region: Some("ia\0d".into()),
        ..Default::default()
    };
    match db.machine_listings("web", &filter) {
        Err(StoreError::Invalid(m)) => assert!(m.contains("NUL byte"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!db
        .machine_listings("web", &MachineFilter::default())?
        .is_empty());
    Ok(())
}

fn volumes(db: &mut Db<'_>) -> Result<()> {
    let v = VolumeRecord {
        id: "vol_a".into(),
        app_name: "web".into(),
        name: "data".into(),
        region: "ord".into(),
        zone: "ab12".into(),
        host: "h1".into(),
        size_gb: 1,
        state: "created".into(),
        encrypted: false,
        fstype: "ext4".into(),
        attached_machine_id: None,
        snapshot_retention: 5,
        auto_backup_enabled: true,
        created_at: "t".into(),
        deleted_at_ms: None,
        sealed_key: Some(vec![9, 0, 7]),
    };
    db.insert_volume(&v).expect("insert volume");
    assert_eq!(db.volume("web", "vol_a")?, Some(v.clone()));
    assert_eq!(db.volume("api", "vol_a")?, None, "another app's");
    let mut m: MachineRecord = db.machine_by_id("m1")?.unwrap();
    m.id = "mv".into();
    m.app_name = "web".into();
    m.name = "mv".into();
    m.config.mounts = Some(vec![hangar_types::volume::MachineMount {
        volume: "vol_a".into(),
        path: "/data".into(),
        ..Default::default()
    }]);
    let launch = |id: &str| hangar_types::MachineEvent {
        id: id.into(),
        kind: hangar_types::EventKind::Launch,
        status: "created".into(),
        source: "user".into(),
        timestamp: 1,
        request: None,
    };
    db.insert_machine(&m, &launch("ev1"))
        .expect("insert machine");
    assert_eq!(
        db.volume("web", "vol_a")?
            .unwrap()
            .attached_machine_id
            .as_deref(),
        Some("mv")
    );
    let mut second = m.clone();
    second.id = "mv2".into();
    second.name = "mv2".into();
    match db.insert_machine(&second, &launch("ev2")) {
        Err(StoreError::Conflict(msg)) => assert!(msg.contains("attached to machine mv"), "{msg}"),
        other => panic!("a held volume is refused: {other:?}"),
    }
    assert!(
        db.machine_by_id("mv2")?.is_none(),
        "nothing of the refused machine is kept"
    );
    assert!(
        !db.soft_delete_volume("vol_a", 10)?,
        "held volumes are not destroyed"
    );
    db.apply_changes(&[hangar_types::observed::MachineChange::Transition {
        machine_id: "mv".into(),
        state: hangar_types::MachineState::Destroyed,
        runtime: None,
        event: hangar_types::MachineEvent {
            kind: hangar_types::EventKind::Destroy,
            ..launch("ev3")
        },
        at: "t9".into(),
    }])?;
    assert_eq!(
        db.volume("web", "vol_a")?.unwrap().attached_machine_id,
        None,
        "freed"
    );
    db.set_volume_size("vol_a", 2, "created")?;
    db.update_volume_settings("vol_a", 9, false)?;
    let got = db.volume("web", "vol_a")?.unwrap();
    assert_eq!(
        (got.size_gb, got.snapshot_retention, got.auto_backup_enabled),
        (2, 9, false)
    );
    assert!(db.soft_delete_volume("vol_a", 10)?);
    assert!(db.volumes("web", false)?.is_empty());
    assert_eq!(db.volumes("web", true)?.len(), 1);
    assert!(
        db.purge_volumes(5)?.is_empty(),
        "kept until its day is over"
    );
    assert_eq!(db.purge_volumes(11)?.len(), 1);
    assert!(db.volumes("web", true)?.is_empty());
    Ok(())
}

fn snapshots(db: &mut Db<'_>) -> Result<()> {
    let s = crate::snapshots::SnapshotRecord {
        id: "vs_a".into(),
        app_name: "web".into(),
        volume_id: "vol_a".into(),
        host: "h1".into(),
        status: "created".into(),
        kind: "BACKUP_TYPE_ON_DEMAND".into(),
        size: 10,
        volume_size: 1 << 30,
        digest: "d".into(),
        retention_days: 1,
        created_at: "t".into(),
        created_at_ms: 1000,
        sealed_key: Some(vec![0, 1, 255]),
    };
    db.insert_snapshot(&s)?;
    let later = crate::snapshots::SnapshotRecord {
        id: "vs_b".into(),
        created_at_ms: 2000,
        retention_days: 5,
        ..s.clone()
    };
    db.insert_snapshot(&later)?;
    assert_eq!(db.snapshot("web", "vs_a")?, Some(s.clone()));
    assert_eq!(db.snapshot("api", "vs_a")?, None, "another app's");
    let ids =
        |v: Vec<crate::snapshots::SnapshotRecord>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(db.snapshots_of("vol_a")?),
        ["vs_a", "vs_b"],
        "oldest first"
    );
    assert_eq!(ids(db.snapshots_of_app("web")?).len(), 2);
    assert!(
        db.expired_snapshots(1000 + 86_400_000)?.is_empty(),
        "a day is kept"
    );
    assert_eq!(ids(db.expired_snapshots(1001 + 86_400_000)?), ["vs_a"]);
    db.delete_snapshot("vs_a")?;
    assert_eq!(ids(db.snapshots_of("vol_a")?), ["vs_b"]);
    Ok(())
}

fn wireguard_peers(db: &mut Db<'_>) -> Result<()> {
    let peer = |name: &str, key: &str, address: &str| WireguardPeerRecord {
        org_slug: "personal".into(),
        name: name.into(),
        region: "ord".into(),
        public_key: key.into(),
        address: address.into(),
        created_at: format!("2026-12-06T00:00:0{}Z", address.len() % 10),
    };
    let laptop = peer("laptop", "k1", "fdaa:0:1:ffff::1:2");
    db.insert_wireguard_peer(&laptop)?;
    for dup in [
        peer("laptop", "k2", "fdaa:0:1:ffff::2:2"),
        peer("ci", "k1", "fdaa:0:1:ffff::2:2"),
        peer("ci", "k2", "fdaa:0:1:ffff::1:2"),
    ] {
        let e = db.insert_wireguard_peer(&dup).unwrap_err();
        assert!(e.is_unique_violation(), "{e}");
    }
    db.insert_wireguard_peer(&peer("ci", "k2", "fdaa:0:1:ffff::2:2"))?;
    let names = |v: Vec<WireguardPeerRecord>| v.into_iter().map(|p| p.name).collect::<Vec<_>>();
    assert_eq!(names(db.wireguard_peers(Some("personal"))?).len(), 2);
    assert_eq!(db.wireguard_peers(None)?.len(), 2);
    assert!(db.wireguard_peers(Some("other"))?.is_empty());
    assert!(db.delete_wireguard_peer("personal", "ci")?);
    assert!(!db.delete_wireguard_peer("personal", "ci")?);
    assert_eq!(db.wireguard_peers(None)?, vec![laptop]);
    Ok(())
}

#[test]
fn every_query_runs_on_both_engines() {
    for (_dir, store) in test_stores() {
        store
            .call_blocking(|db| {
                apps_and_tokens(db)?;
                leases_and_keys(db)?;
                edge(db)?;
                secrets_and_releases(db)?;
                observed_changes(db)?;
                feed_in_commit_order(db)?;
                text_with_nul_is_refused(db)?;
                volumes(db)?;
                snapshots(db)?;
                wireguard_peers(db)?;
                assert!(
                    db.delete_app("web")?,
                    "deleting an app cascades to its rows"
                );
                assert!(db.machine_by_id("m1")?.is_none());
                assert!(db.secrets("web")?.is_empty());
                Ok(())
            })
            .unwrap();
    }
}

#[test]
fn a_newer_schema_is_refused_before_anything_is_written() {
    for (_dir, store) in test_stores() {
        store
            .call_blocking(|db| {
                db.conn.execute(
                    "INSERT INTO schema_migrations (version) VALUES (?1)",
                    sql::args![999_i64],
                )?;
                Ok(())
            })
            .unwrap();
        let err = migrations::apply(&mut store.conn.lock().unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .contains("newer than this hangar understands"),
            "{err}"
        );
    }
}

#[test]
fn an_unreachable_postgres_says_where_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://hangar:s3cret@127.0.0.1:{port}/hangar");
    let err = Store::connect(&url.parse().unwrap()).err().unwrap();
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}/hangar")), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(err.is_unavailable(), "{text}");
}

/// A follower whose wake-up never came still reads what was committed, within its poll.
#[test]
fn a_follower_that_missed_its_wake_up_still_converges() {
    for (_dir, store) in test_stores() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(follower_converges(&store));
    }
}

async fn follower_converges(store: &Store) {
    {
        let head = store.call(|db| db.feed_head()).await.unwrap();
        let mut follower = store.follow(head);
        store
            .call(|db| {
                db.ensure_org(&org(), "t")?;
                db.insert_app(&app("quiet"))?;
                // As if this process had not seen its own commit.
                db.fed = false;
                Ok(())
            })
            .await
            .unwrap();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                match follower.next().await.unwrap() {
                    FeedRead::Entries(e) if e.is_empty() => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("the poll finds it");
        let FeedRead::Entries(entries) = read else {
            panic!("{read:?}");
        };
        assert_eq!(entries[0].subject, "quiet");
        assert_eq!(follower.cursor(), entries.last().unwrap().revision);
    }
}
