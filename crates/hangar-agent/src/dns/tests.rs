//! The resolver on the wire, asked with `dig` over UDP and TCP on loopback: private
//! answers with TTL 5, NXDOMAIN with an SOA, each org seeing only its own names,
//! truncation over UDP and the whole answer over TCP, and recursion to a real resolver
//! (unbound) for every other name.

use std::collections::{BTreeMap, HashMap};

use hangar_testkit::{dig, dns_tools_available, TestResolver};

use super::names::{Member, Network};
use super::{DnsSettings, FixedResolver};

fn member(id: &str, app: &str, n: u16, org: u16) -> Member {
    Member {
        machine_id: id.into(),
        app: app.into(),
        region: "iad".into(),
        process_group: "app".into(),
        address: std::net::Ipv6Addr::new(0xfdaa, 0, org, 0xa7b, n, 0, 0, 2),
        started: true,
        metadata: BTreeMap::new(),
    }
}

/// A resolver for a machine of org 1 on a free loopback port; org 1 has app `b` with
/// `machines` machines, org 2 has app `secret`.
async fn resolver(machines: u16, upstream: &TestResolver) -> (FixedResolver, String) {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = udp.local_addr().unwrap().port();
    let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let b = Network {
        members: (1..=machines)
            .map(|n| member(&format!("b{n:013}"), "b", n, 1))
            .collect(),
        ..Default::default()
    };
    let other = Network {
        members: vec![member("s000000000001", "secret", 1, 2)],
        ..Default::default()
    };
    let fixed = FixedResolver::serve(
        HashMap::from([(1, b), (2, other)]),
        ("a000000000001", 1),
        udp,
        tcp,
        &DnsSettings {
            upstream: vec![upstream.addr],
        },
    )
    .unwrap();
    (fixed, port.to_string())
}

fn upstream() -> Option<TestResolver> {
    if let Err(why) = dns_tools_available() {
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipping: {why}");
        return None;
    }
    Some(TestResolver::start(
        "example.test.",
        &["www.example.test. 300 IN A 192.0.2.10".to_string()],
    ))
}

/// `dig` in a blocking thread, so the resolver on this runtime can answer it.
async fn ask(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        dig(&args)
    })
    .await
    .unwrap()
}

fn at(port: &str, rest: &[&str]) -> Vec<String> {
    let mut v = vec!["@127.0.0.1".to_string(), "-p".into(), port.into()];
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_names_answer_on_the_wire_and_public_ones_recurse() {
    let Some(up) = upstream() else { return };
    let (_r, port) = resolver(2, &up).await;

    let full = ask(at(&port, &["b.internal", "AAAA", "+noall", "+answer"])).await;
    let lines: Vec<&str> = full.lines().collect();
    assert_eq!(lines.len(), 2, "{full}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        fields,
        ["b.internal.", "5", "IN", "AAAA", "fdaa:0:1:a7b:1::2"],
        "TTL 5: {full}"
    );

    let nx = ask(at(&port, &["nope.internal", "AAAA"])).await;
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    let soa = nx
        .lines()
        .find(|l| l.contains("\tSOA\t"))
        .unwrap_or_else(|| panic!("an SOA in the authority section: {nx}"));
    assert_eq!(
        soa.split_whitespace().take(2).collect::<Vec<_>>(),
        ["internal.", "5"],
        "{soa}"
    );

    // Another org's app does not exist for this asker.
    let hidden = ask(at(&port, &["secret.internal", "AAAA"])).await;
    assert!(hidden.contains("status: NXDOMAIN"), "{hidden}");

    // An A query for a private name: the name is there, with no such record.
    let a = ask(at(&port, &["b.internal", "A"])).await;
    assert!(
        a.contains("status: NOERROR") && a.contains("ANSWER: 0"),
        "{a}"
    );

    let txt = ask(at(&port, &["vms.b.internal", "TXT", "+short"])).await;
    assert_eq!(
        txt.trim(),
        "\"b0000000000001 iad,b0000000000002 iad\"",
        "{txt}"
    );

    let public = ask(at(&port, &["www.example.test", "A", "+short"])).await;
    assert_eq!(public.trim(), "192.0.2.10");
    let missing = ask(at(&port, &["gone.example.test", "A"])).await;
    assert!(missing.contains("status: NXDOMAIN"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let Some(up) = upstream() else { return };
    let (_r, port) = resolver(60, &up).await;
    let udp = ask(at(
        &port,
        &["b.internal", "AAAA", "+noedns", "+ignore", "+notcp"],
    ))
    .await;
    assert!(udp.contains(" tc"), "the flags say truncated: {udp}");
    let tcp = ask(at(&port, &["b.internal", "AAAA", "+tcp", "+short"])).await;
    assert_eq!(tcp.lines().count(), 60, "{tcp}");
    // dig retries over TCP by itself when told the answer was cut.
    let retried = ask(at(&port, &["b.internal", "AAAA", "+noedns", "+short"])).await;
    assert_eq!(retried.lines().count(), 60, "{retried}");
}
