//! WireGuard peers on containerd, from a "laptop" in a network namespace of the test's
//! own (reached over a veth, as a laptop reaches a server over the internet):
//! `hangar wireguard create` writes a config that `wireguard-go` and `wg` take as
//! they are; with it the laptop resolves `<app>.internal` at the config's DNS and
//! fetches from a machine; machines see the peer as `<name>._peer.internal`; a
//! restarted host carries the peer again; after `hangar wireguard remove` the laptop
//! reaches nothing. Bad input gets clear errors.

use std::collections::HashMap;
use std::process::Command;

use serde_json::json;

use crate::containerd::{run, setup_with, sh};
use crate::harness::{eventually, free_port, stderr, stdout};

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Runs a command on the host; its output, or a panic that says what failed.
fn host(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command in the laptop's namespace; its output, whatever its status.
fn inside(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether wireguard-go and wg are here (CI installs them).
fn tools() -> bool {
    let have = |t: &str| {
        Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let ok = have("wireguard-go") && have("wg");
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "WireGuard tests cannot run in CI without wireguard-go and wg"
        );
        eprintln!("skipping WireGuard test: install wireguard-go and wireguard-tools");
    }
    ok
}

/// The laptop: a namespace with a veth to the host, and whatever runs in it.
struct Laptop {
    ns: String,
    host_if: String,
    gateway_if: String,
}

impl Laptop {
    fn new(tag: &str, subnet: u8, gateway_if: &str) -> Laptop {
        let l = Laptop {
            ns: format!("hgwg{tag}"),
            host_if: format!("hgwgh{tag}"),
            gateway_if: gateway_if.to_string(),
        };
        let peer_if = format!("hgwgn{tag}");
        host(&["ip", "netns", "add", &l.ns]);
        host(&[
            "ip", "link", "add", &l.host_if, "type", "veth", "peer", "name", &peer_if,
        ]);
        host(&["ip", "link", "set", &peer_if, "netns", &l.ns]);
        host(&[
            "ip",
            "addr",
            "add",
            &format!("10.251.{subnet}.1/30"),
            "dev",
            &l.host_if,
        ]);
        host(&["ip", "link", "set", &l.host_if, "up"]);
        let n = |args: &[&str]| {
            let mut all = vec!["ip", "-n", l.ns.as_str()];
            all.extend_from_slice(args);
            host(&all);
        };
        n(&[
            "addr",
            "add",
            &format!("10.251.{subnet}.2/30"),
            "dev",
            &peer_if,
        ]);
        n(&["link", "set", &peer_if, "up"]);
        n(&["link", "set", "lo", "up"]);
        l
    }
}

impl Drop for Laptop {
    fn drop(&mut self) {
        // wireguard-go holds the namespace while it runs.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").arg(pid).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let gateway = hangar_net::wireguard::Gateway::new(
            &self.gateway_if,
            0,
            std::path::Path::new("/nonexistent"),
        );
        // Drop runs inside the test's runtime: the removal gets a thread of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = rt.block_on(gateway.remove());
            }
        })
        .join();
    }
}

/// The `key = value` lines of a WireGuard config.
fn fields(config: &str) -> HashMap<String, String> {
    config
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_config_lets_a_laptop_resolve_and_reach_machines() {
    if !tools() {
        return;
    }
    let tag = format!("{:04x}", rand_u16());
    let subnet = (rand_u16() % 250) as u8 + 1;
    let gateway_if = format!("hangar-wg{tag}");
    let port = free_port().to_string();
    let endpoint = format!("10.251.{subnet}.1:{port}");
    let Some((_reg, mut s, image)) = setup_with(
        "wg-a",
        &[
            "--wireguard-interface",
            &gateway_if,
            "--wireguard-port",
            &port,
            "--wireguard-endpoint",
            &endpoint,
        ],
    )
    .await
    else {
        return;
    };
    let laptop = Laptop::new(&tag, subnet, &gateway_if);
    let web = json!({"image": image,
        "files": [{"guest_path": "/www/index.html", "raw_value": b64("hello from a\n")}],
        "init": {"exec": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]},
        "services": [{"protocol": "tcp", "internal_port": 8080,
            "ports": [{"port": 80, "handlers": ["http"]}]}]});
    let a = run(&s, "wg-a", web).await;
    s.wait_state("wg-a", &a, "started").await;
    let a_ip = s.machine("wg-a", &a).await["private_ip"]
        .as_str()
        .unwrap()
        .to_string();

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("laptop.conf");
    let conf_arg = conf.to_str().unwrap();
    let out = s.cli(&["wireguard", "create", "personal", "ord", "laptop", conf_arg]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), s.log());
    assert!(
        stdout(&out).contains("Peer laptop added"),
        "{}",
        stdout(&out)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&conf).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the config holds a private key");
    let config = std::fs::read_to_string(&conf).unwrap();
    let f = fields(&config);
    assert_eq!(f["DNS"], "fdaa:0:1::3", "{config}");
    assert_eq!(f["AllowedIPs"], "fdaa:0:1::/48", "{config}");
    assert_eq!(f["Endpoint"], endpoint, "{config}");
    let address = f["Address"].clone();
    assert!(address.ends_with("/120"), "{config}");
    let peer_ip = address.trim_end_matches("/120").to_string();

    // The laptop's side, as wg-quick would set it up from the config.
    let ns = laptop.ns.as_str();
    inside(ns, &["wireguard-go", "wgc"]);
    let key = dir.path().join("laptop.key");
    std::fs::write(&key, &f["PrivateKey"]).unwrap();
    let set = inside(
        ns,
        &[
            "sh",
            "-c",
            &format!(
                "wg set wgc private-key {} peer {} allowed-ips {} endpoint {} persistent-keepalive 15 && \
                 ip -6 addr add {address} dev wgc nodad && ip link set wgc up && ip -6 route add {} dev wgc && echo ok",
                key.display(),
                f["PublicKey"],
                f["AllowedIPs"],
                f["Endpoint"],
                f["AllowedIPs"]
            ),
        ],
    );
    assert!(set.contains("ok"), "the laptop's interface: {set}");

    // Its DNS answers the org's names; its traffic reaches the machine.
    let dig = |name: &str, kind: &str| {
        inside(
            ns,
            &[
                "dig",
                "+short",
                "+time=1",
                "+tries=1",
                kind,
                name,
                "@fdaa:0:1::3",
            ],
        )
    };
    let found = eventually(15, "wg-a.internal resolves over the tunnel", || {
        let a_ip = a_ip.clone();
        let dig = &dig;
        async move {
            let out = dig("wg-a.internal", "AAAA");
            out.contains(&a_ip).then_some(out)
        }
    })
    .await;
    assert!(found.contains(&a_ip), "{found}");
    assert!(dig("_peer.internal", "TXT").contains("laptop"));
    assert!(dig("laptop._peer.internal", "AAAA").contains(&peer_ip));
    assert!(
        dig("nope.internal", "AAAA").trim().is_empty(),
        "unknown names have no answer"
    );
    let url = format!("http://[{a_ip}]:8080/");
    let body = inside(ns, &["curl", "-sS", "-m", "5", "-g", &url]);
    assert_eq!(body, "hello from a\n");
    // The app's Flycast address, by name, through the proxy.
    let out = s.cli(&["ips", "allocate-v6", "--private", "-a", "wg-a", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let flycast: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let flycast = flycast["ip"].as_str().unwrap().to_string();
    let named = eventually(10, "wg-a.flycast resolves over the tunnel", || {
        let (dig, flycast) = (&dig, flycast.clone());
        async move {
            let out = dig("wg-a.flycast", "AAAA");
            out.contains(&flycast).then_some(out)
        }
    })
    .await;
    assert!(named.contains(&flycast), "{named}");
    let via_proxy = inside(
        ns,
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            "-g",
            &format!("http://[{flycast}]/"),
        ],
    );
    assert_eq!(via_proxy, "hello from a\n");
    // Machines know the peer by name.
    let seen = sh(&s, "wg-a", &a, "nslookup laptop._peer.internal").await;
    assert!(seen.contains(&peer_ip), "{seen}");
    // A host service on every address is not reachable through the tunnel, though
    // the gateway's own address is one of them.
    let service = std::net::TcpListener::bind("[::]:0").unwrap();
    let there = format!("[fdaa:0:1::3]:{}", service.local_addr().unwrap().port());
    std::thread::spawn(move || {
        use std::io::Write;
        for mut c in service.incoming().flatten() {
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\n\r\nhost service\n");
        }
    });
    let reached = inside(
        ns,
        &[
            "sh",
            "-c",
            &format!("curl -s -m 2 -g http://{there}/; echo rc=$?"),
        ],
    );
    assert!(
        !reached.contains("host service") && !reached.contains("rc=0"),
        "the gateway lets peers reach only DNS and Flycast on the host: {reached}"
    );

    let out = s.cli(&["wireguard", "list", "personal", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let peers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(peers[0]["name"], "laptop", "{peers}");
    assert_eq!(peers[0]["peerip"], peer_ip.as_str(), "{peers}");

    // After a restart of the host (the interface gone with it), the gateway carries
    // the peer again without being asked.
    s.terminate();
    hangar_net::wireguard::Gateway::new(&gateway_if, 0, dir.path())
        .remove()
        .await
        .unwrap();
    s.spawn().await;
    let again = eventually(20, "the peer reaches the machine after a restart", || {
        let url = url.clone();
        async move {
            let body = inside(ns, &["curl", "-sS", "-m", "2", "-g", &url]);
            (body == "hello from a\n").then_some(body)
        }
    })
    .await;
    assert_eq!(again, "hello from a\n");

    // Bad input.
    let other = dir.path().join("other.conf");
    let other_arg = other.to_str().unwrap();
    for (args, says) in [
        (
            vec![
                "wireguard",
                "create",
                "personal",
                "ord",
                "laptop",
                other_arg,
            ],
            "already has a peer named laptop",
        ),
        (
            vec![
                "wireguard",
                "create",
                "personal",
                "ord",
                "no_underscores",
                other_arg,
            ],
            "invalid peer name",
        ),
        (
            vec!["wireguard", "create", "acme", "ord", "ci", other_arg],
            "org acme not found",
        ),
        (
            vec!["wireguard", "create", "personal", "ord", "ci", conf_arg],
            "already exists",
        ),
        (
            vec!["wireguard", "remove", "personal", "ghost"],
            "no peer named ghost",
        ),
        (
            vec!["wireguard", "remove", "personal"],
            "name the peer to remove",
        ),
    ] {
        let out = s.cli(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    assert!(!other.exists(), "a refused peer leaves no config");
    let out = s.cli(&["wireguard", "list", "personal", "--json"]);
    let peers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(peers.as_array().map(Vec::len), Some(1), "{peers}");

    // Removed, the key reaches nothing.
    let out = s.cli(&["wireguard", "remove", "personal", "laptop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(host(&["wg", "show", &gateway_if, "peers"])
        .trim()
        .is_empty());
    let body = inside(ns, &["curl", "-s", "-m", "3", "-g", &url]);
    assert!(body.is_empty(), "a removed peer still fetched: {body}");
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id()) as u16
}
