//! Every private name of Fly's list, on a small network of two apps.

use super::*;

fn member(id: &str, app: &str, region: &str, group: &str, last: u16, started: bool) -> Member {
    Member {
        machine_id: id.into(),
        app: app.into(),
        region: region.into(),
        process_group: group.into(),
        address: Ipv6Addr::new(0xfdaa, 0, 1, 0, 0, 0, 0, last),
        started,
        metadata: BTreeMap::new(),
    }
}

fn ip(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfdaa, 0, 1, 0, 0, 0, 0, last)
}

fn network() -> Network {
    let mut web = member("m1", "web", "iad", "app", 1, true);
    web.metadata.insert("role".into(), "primary".into());
    Network {
        members: vec![
            web,
            member("m2", "web", "lhr", "app", 2, true),
            member("m3", "web", "iad", "worker", 3, true),
            member("m4", "web", "syd", "app", 4, false),
            member("d1", "db", "iad", "app", 9, false),
        ],
        flycast: [("web".to_string(), vec![ip(0x11)])].into(),
        peers: vec![
            Peer {
                name: "laptop".into(),
                address: ip(0x100),
            },
            Peer {
                name: "interactive-abc".into(),
                address: ip(0x101),
            },
        ],
        apps: vec!["empty".into()],
        index: Default::default(),
    }
}

fn aaaa(name: &str) -> Answer {
    network().answer(name, Kind::Aaaa, Some("lhr"))
}

fn txt(name: &str) -> Answer {
    network().answer(name, Kind::Txt, None)
}

#[test]
fn address_names_list_started_machines_only() {
    assert_eq!(
        aaaa("web.internal"),
        Answer::Aaaa(vec![ip(1), ip(2), ip(3)])
    );
    assert_eq!(
        aaaa("Global.Web.Internal."),
        Answer::Aaaa(vec![ip(1), ip(2), ip(3)])
    );
    assert_eq!(aaaa("iad.web.internal"), Answer::Aaaa(vec![ip(1), ip(3)]));
    assert_eq!(aaaa("m2.vm.web.internal"), Answer::Aaaa(vec![ip(2)]));
    assert_eq!(aaaa("m4.vm.web.internal"), Answer::NoData, "stopped");
    assert_eq!(
        aaaa("worker.process.web.internal"),
        Answer::Aaaa(vec![ip(3)])
    );
    assert_eq!(
        aaaa("primary.role.kv._metadata.web.internal"),
        Answer::Aaaa(vec![ip(1)])
    );
    assert_eq!(aaaa("web.flycast"), Answer::Aaaa(vec![ip(0x11)]));
    assert_eq!(aaaa("laptop._peer.internal"), Answer::Aaaa(vec![ip(0x100)]));
    assert_eq!(aaaa("db.internal"), Answer::NoData, "every machine stopped");
    assert_eq!(
        aaaa("empty.internal"),
        Answer::NoData,
        "an app without machines"
    );
}

#[test]
fn nearest_starts_with_the_askers_region() {
    assert_eq!(
        aaaa("top1.nearest.of.web.internal"),
        Answer::Aaaa(vec![ip(2)])
    );
    assert_eq!(
        aaaa("top2.nearest.of.web.internal"),
        Answer::Aaaa(vec![ip(2), ip(1)])
    );
    assert_eq!(
        aaaa("top9.nearest.of.web.internal"),
        Answer::Aaaa(vec![ip(2), ip(1), ip(3)])
    );
    assert_eq!(aaaa("top0.nearest.of.web.internal"), Answer::NxDomain);
}

#[test]
fn text_names_list_machines_regions_apps_instances_and_peers() {
    assert_eq!(
        txt("vms.web.internal"),
        Answer::Txt("m1 iad,m2 lhr,m3 iad".into())
    );
    assert_eq!(
        txt("all.vms.web.internal"),
        Answer::Txt("m1 iad,m2 lhr,m3 iad,m4 syd".into())
    );
    assert_eq!(txt("regions.web.internal"), Answer::Txt("iad,lhr".into()));
    assert_eq!(
        txt("all.regions.web.internal"),
        Answer::Txt("iad,lhr,syd".into())
    );
    assert_eq!(txt("_apps.internal"), Answer::Txt("db,empty,web".into()));
    assert_eq!(
        txt("_peer.internal"),
        Answer::Txt("laptop".into()),
        "interactive peers hidden"
    );
    let Answer::Txt(started) = txt("_instances.internal") else {
        panic!()
    };
    assert_eq!(started.split(';').count(), 3);
    assert!(
        started.starts_with("instance=m1,app=web,ip=fdaa:0:1::1,region=iad"),
        "{started}"
    );
    let Answer::Txt(all) = txt("all._instances.internal") else {
        panic!()
    };
    assert_eq!(all.split(';').count(), 5);
    assert_eq!(txt("regions.db.internal"), Answer::NoData);
}

#[test]
fn unknown_private_names_do_not_exist_and_others_go_upstream() {
    assert_eq!(aaaa("nope.internal"), Answer::NxDomain);
    assert_eq!(
        aaaa("zz9.web.internal"),
        Answer::NxDomain,
        "no machine in that region"
    );
    assert_eq!(aaaa("m9.vm.web.internal"), Answer::NxDomain);
    assert_eq!(aaaa("nope.process.web.internal"), Answer::NxDomain);
    assert_eq!(aaaa("stranger._peer.internal"), Answer::NxDomain);
    assert_eq!(
        aaaa("db.flycast"),
        Answer::NoData,
        "an app of the network without one"
    );
    assert_eq!(aaaa("other.flycast"), Answer::NxDomain);
    assert_eq!(aaaa("deb.debian.org"), Answer::Elsewhere);
    assert_eq!(aaaa("internal.example.com"), Answer::Elsewhere);
    // A name of the wrong type exists with nothing of that type.
    assert_eq!(txt("web.internal"), Answer::NoData);
    assert_eq!(aaaa("vms.web.internal"), Answer::NoData);
    assert_eq!(
        network().answer("web.internal", Kind::Other, None),
        Answer::NoData
    );
}
