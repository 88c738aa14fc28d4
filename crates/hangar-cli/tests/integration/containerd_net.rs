//! What a container machine sees of its network and limits: the probe's report (env,
//! addresses, DNS, hosts, cgroup limits), images by multi-arch index and by digest, and
//! two machines of an app serving on the same port and reaching each other over 6PN and
//! IPv4. Isolation between orgs is shown in `hangar-net`'s own tests.

use serde_json::json;

use crate::containerd::{run, setup, sh};
use crate::harness::{eventually, TestServer};

/// What the probe inside a machine reports.
async fn probe(s: &TestServer, app: &str, id: &str) -> serde_json::Value {
    let out = s.exec(app, id, &["/bin/probe"]).await;
    serde_json::from_str(out["stdout"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("probe output: {e}: {out}"))
}

/// The body of `GET /` on `addr:8080`, fetched from inside machine `from` with nc
/// (busybox-static's wget cannot resolve even literal addresses).
async fn http_get(s: &TestServer, from: &str, addr: &str) -> String {
    let out = sh(
        s,
        "net",
        from,
        &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {addr} 8080"),
    )
    .await;
    out.rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_probe_sees_env_addresses_dns_and_limits() {
    let Some((_reg, s, image)) = setup("probe").await else {
        return;
    };
    // By index: the host's platform is chosen.
    let multi = format!("{image}-multi");
    let id = run(
        &s,
        "probe",
        json!({"image": multi, "guest": {"cpus": 2, "memory_mb": 512}}),
    )
    .await;
    s.wait_state("probe", &id, "started").await;
    let m = s.machine("probe", &id).await;
    let p = probe(&s, "probe", &id).await;
    let env = p["env"].as_str().unwrap();
    let ip = m["private_ip"].as_str().unwrap();
    assert!(env.contains(&format!("FLY_PRIVATE_IP={ip}")), "{env}");
    assert!(env.contains("FLY_VM_MEMORY_MB=512"), "{env}");
    assert!(p["addresses"].as_str().unwrap().contains(ip), "{p}");
    assert!(
        p["resolv_conf"]
            .as_str()
            .unwrap()
            .contains("nameserver fdaa::3"),
        "{p}"
    );
    assert!(
        p["hosts"]
            .as_str()
            .unwrap()
            .contains(&format!("{id}.vm.probe.internal")),
        "{p}"
    );
    assert_eq!(p["hostname"].as_str().unwrap().trim(), id);
    assert_eq!(
        p["memory_limit"].as_str().unwrap().trim(),
        (512u64 << 20).to_string(),
        "{p}"
    );
    let cpu = p["cpu_quota"].as_str().unwrap().trim().to_string();
    assert!(
        cpu == "200000" || cpu.starts_with("200000 "),
        "cpu quota: {cpu}"
    );

    // By digest: the resolved reference runs too.
    let resolved = env
        .lines()
        .find_map(|l| l.strip_prefix("FLY_IMAGE_REF="))
        .unwrap()
        .to_string();
    assert!(resolved.contains("@sha256:"), "{resolved}");
    let by_digest = run(&s, "probe", json!({"image": resolved})).await;
    s.wait_state("probe", &by_digest, "started").await;
}

#[tokio::test]
async fn machines_get_private_addresses_and_share_a_port() {
    let Some((_reg, s, image)) = setup("net").await else {
        return;
    };
    let web = json!({"image": image, "files": [{"guest_path": "/www/index.html", "raw_value": "aGVsbG8gNlBO"}],
        "init": {"exec": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]},
        "services": [{"protocol": "tcp", "internal_port": 8080, "ports": [{"port": 80, "handlers": ["http"]}]}]});
    let a = run(&s, "net", web.clone()).await;
    let b = run(&s, "net", web).await;
    s.wait_state("net", &a, "started").await;
    s.wait_state("net", &b, "started").await;
    let b_ip = s.machine("net", &b).await["private_ip"]
        .as_str()
        .unwrap()
        .to_string();
    let a_ip = s.machine("net", &a).await["private_ip"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(b_ip.starts_with("fdaa:0:1:a7b:"), "{b_ip}");

    let addrs = sh(&s, "net", &a, "ip addr show dev eth0").await;
    assert!(
        addrs.contains(&format!("{a_ip}/64")),
        "FLY_PRIVATE_IP is on eth0: {addrs}"
    );
    let v4 = addrs
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("inet ")
                .and_then(|r| r.split('/').next())
        })
        .expect("an IPv4 address")
        .to_string();
    assert!(v4.starts_with("172.19.0."), "{v4}");
    assert!(sh(&s, "net", &a, "cat /etc/resolv.conf")
        .await
        .contains("nameserver fdaa::3"));
    assert!(sh(&s, "net", &a, "cat /etc/hosts")
        .await
        .contains(&format!("{a_ip}\t{a} {a}.vm.net.internal")));

    // Both listen on :8080; each reaches the other over 6PN, and over IPv4.
    let got = eventually(10, "a reaching b over 6PN", || async {
        let out = http_get(&s, &a, &b_ip).await;
        (!out.is_empty()).then_some(out)
    })
    .await;
    assert_eq!(got, "hello 6PN");
    let out = http_get(&s, &b, &v4).await;
    assert_eq!(out, "hello 6PN");

    // The edge proxy reaches them from the host through the bridge.
    let body = eventually(10, "the proxy to answer", || async {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/", s.http_port))
            .header("host", "net.localhost")
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(r.text().await.ok()?)
    })
    .await;
    assert_eq!(body, "hello 6PN");

    // Destroy frees the namespace.
    s.call(
        "DELETE",
        &format!("/apps/net/machines/{a}?force=true"),
        None,
    )
    .await;
    assert!(!std::path::Path::new(&format!("/run/netns/hangar-{a}")).exists());
}
