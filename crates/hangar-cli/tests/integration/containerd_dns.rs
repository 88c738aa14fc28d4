//! Private DNS as machines use it, on containerd: from inside a machine, its resolver
//! at `fdaa::3` (and the org prefix's `::3`) answers every `.internal` name of its
//! org for the machines that are started, follows a stop and a start, leaves out a
//! machine with `dns.skip_registration`, and resolves public names through the host's
//! resolver (here a real unbound on loopback, as CI has no outside network).

use serde_json::json;

use crate::containerd::{run, setup_with, sh};
use crate::harness::{eventually, TestServer};

/// The `+short` answers of `dig` asked inside machine `id`'s network namespace.
async fn dig_in(id: &str, server: &str, name: &str, kind: &str) -> Vec<String> {
    let ns = format!("hangar-{id}");
    let (server, name, kind) = (format!("@{server}"), name.to_string(), kind.to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "dig", "+short", "+time=2", "+tries=1"])
            .args([&server, &name, &kind])
            .output()
            .expect("run dig")
    })
    .await
    .unwrap();
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_matches('"').to_string())
        .collect();
    lines.sort();
    lines
}

async fn ip_of(s: &TestServer, app: &str, id: &str) -> String {
    s.machine(app, id).await["private_ip"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn machines_find_each_other_by_private_name() {
    if let Err(why) = hangar_testkit::dns_tools_available() {
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipping: {why}");
        return;
    }
    let upstream = hangar_testkit::TestResolver::start(
        "example.test.",
        &["www.example.test. 300 IN A 192.0.2.10".to_string()],
    );
    let up = upstream.addr.to_string();
    let Some((_reg, s, image)) = setup_with("dns-a", &["--dns-upstream", &up]).await else {
        return;
    };
    s.create_app("dns-b").await;
    let web = |extra: serde_json::Value| {
        let mut c = json!({"image": image,
            "files": [{"guest_path": "/www/index.html", "raw_value": "aGVsbG8gYg=="}],
            "init": {"exec": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]}});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let worker = run(
        &s,
        "dns-b",
        web(json!({"metadata": {"fly_process_group": "worker"}})),
    )
    .await;
    let primary = run(&s, "dns-b", web(json!({"metadata": {"role": "primary"}}))).await;
    let hidden = run(
        &s,
        "dns-b",
        web(json!({"dns": {"skip_registration": true}})),
    )
    .await;
    let asker = run(&s, "dns-a", web(json!({}))).await;
    for (app, id) in [
        ("dns-b", &worker),
        ("dns-b", &primary),
        ("dns-b", &hidden),
        ("dns-a", &asker),
    ] {
        s.wait_state(app, id, "started").await;
    }
    let (w_ip, p_ip) = (
        ip_of(&s, "dns-b", &worker).await,
        ip_of(&s, "dns-b", &primary).await,
    );
    let mut both = vec![w_ip.clone(), p_ip.clone()];
    both.sort();

    // The machine's own resolver, through its resolv.conf, with busybox nslookup.
    let looked = sh(&s, "dns-a", &asker, "nslookup -type=aaaa dns-b.internal").await;
    assert!(looked.contains(&w_ip) && looked.contains(&p_ip), "{looked}");
    let hidden_ip = ip_of(&s, "dns-b", &hidden).await;
    assert!(!looked.contains(&hidden_ip), "skip_registration: {looked}");
    // ...and what it finds answers.
    let body = sh(
        &s,
        "dns-a",
        &asker,
        &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {w_ip} 8080"),
    )
    .await;
    assert!(body.ends_with("hello b"), "{body}");
    let public = sh(&s, "dns-a", &asker, "nslookup www.example.test").await;
    assert!(
        public.contains("192.0.2.10"),
        "a public name recurses: {public}"
    );

    // Every name, exactly, at fdaa::3 and at the org prefix's ::3.
    for server in ["fdaa::3", "fdaa:0:1::3"] {
        macro_rules! q {
            ($name:expr, $kind:expr) => {
                dig_in(&asker, server, &$name, $kind)
            };
        }
        assert_eq!(q!("dns-b.internal", "AAAA").await, both);
        assert_eq!(q!("global.dns-b.internal", "AAAA").await, both);
        assert_eq!(q!("ord.dns-b.internal", "AAAA").await, both);
        assert_eq!(
            q!(format!("{worker}.vm.dns-b.internal"), "AAAA").await,
            vec![w_ip.clone()]
        );
        assert_eq!(q!("top1.nearest.of.dns-b.internal", "AAAA").await.len(), 1);
        assert_eq!(
            q!("worker.process.dns-b.internal", "AAAA").await,
            vec![w_ip.clone()]
        );
        assert_eq!(
            q!("primary.role.kv._metadata.dns-b.internal", "AAAA").await,
            vec![p_ip.clone()]
        );
        assert_eq!(q!("regions.dns-b.internal", "TXT").await, ["ord"]);
        let mut vms = [format!("{worker} ord"), format!("{primary} ord")];
        vms.sort();
        assert_eq!(q!("vms.dns-b.internal", "TXT").await, [vms.join(",")]);
        assert_eq!(q!("_apps.internal", "TXT").await, ["dns-a,dns-b"]);
        assert_eq!(q!("www.example.test", "A").await, ["192.0.2.10"]);
    }

    // A stopped machine leaves the answers, and comes back when started.
    let r = s
        .call(
            "POST",
            &format!("/apps/dns-b/machines/{primary}/stop"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state("dns-b", &primary, "stopped").await;
    eventually(5, "the stopped machine to leave dns-b.internal", || async {
        (dig_in(&asker, "fdaa::3", "dns-b.internal", "AAAA").await == [w_ip.clone()]).then_some(())
    })
    .await;
    let all_vms = dig_in(&asker, "fdaa::3", "all.vms.dns-b.internal", "TXT").await;
    assert!(
        all_vms[0].contains(&primary),
        "all.vms lists stopped machines: {all_vms:?}"
    );
    let r = s
        .call(
            "POST",
            &format!("/apps/dns-b/machines/{primary}/start"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    eventually(10, "the started machine to come back", || async {
        (dig_in(&asker, "fdaa::3", "dns-b.internal", "AAAA").await == both).then_some(())
    })
    .await;

    // A machine that does not register still resolves what others do.
    let from_hidden = dig_in(&hidden, "fdaa::3", "dns-b.internal", "AAAA").await;
    assert_eq!(from_hidden, both);
    let nx = tokio::task::spawn_blocking({
        let ns = format!("hangar-{asker}");
        move || {
            std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "dig",
                    "@fdaa::3",
                    "no-such-app.internal",
                    "AAAA",
                ])
                .output()
                .expect("run dig")
        }
    })
    .await
    .unwrap();
    let nx = String::from_utf8_lossy(&nx.stdout);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
}
