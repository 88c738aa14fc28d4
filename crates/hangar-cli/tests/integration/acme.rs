//! Certificates for custom hostnames from a real ACME CA: Pebble (with its DNS test
//! server pointing every name at loopback) validates through the proxy itself —
//! TLS-ALPN-01 on the HTTPS listener, or HTTP-01 on the HTTP listener when TLS-ALPN-01
//! fails — and the issued certificate is served by SNI, verified by curl against
//! Pebble's root, and still served after a restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::harness::{eventually, free_port, stdout, TestServer};

/// Pebble and its DNS server, stopped on drop.
struct Pebble {
    children: Vec<Child>,
    root: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn have_pebble() -> bool {
    Command::new("pebble")
        .arg("-h")
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Where the server will find Pebble's directory, and the root that signs Pebble's
/// own HTTPS certificate.
struct PebblePlan {
    dir: PathBuf,
    port: u16,
    https_root: PathBuf,
}

fn plan(dir: &Path) -> PebblePlan {
    let dir = dir.join("pebble");
    let ca = hangar_certs::ca::DevCa::load_or_create(&dir).unwrap();
    let issued = ca.issue("localhost").unwrap();
    std::fs::write(dir.join("cert.pem"), issued.chain_pem).unwrap();
    std::fs::write(dir.join("key.pem"), issued.key_pem).unwrap();
    let https_root = dir.join("https-root.pem");
    std::fs::write(&https_root, ca.cert_pem()).unwrap();
    PebblePlan {
        dir,
        port: free_port(),
        https_root,
    }
}

impl PebblePlan {
    fn directory(&self) -> String {
        format!("https://localhost:{}/dir", self.port)
    }

    /// Starts Pebble validating against `http_port` (HTTP-01) and `tls_port` (TLS-ALPN-01).
    async fn start(&self, http_port: u16, tls_port: u16) -> Pebble {
        let dns = free_port();
        let management = free_port();
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{}", self.port),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": self.dir.join("cert.pem"),
            "privateKey": self.dir.join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        let config_path = self.dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::create(self.dir.join("pebble.log")).unwrap();
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start pebble");
        let p = Pebble {
            children: vec![challtestsrv, pebble],
            root: self.dir.join("issuing-root.pem"),
        };
        let roots = format!("https://127.0.0.1:{management}/roots/0");
        let pem = eventually(20, "pebble to come up", || {
            let roots = roots.clone();
            async move {
                let out = Command::new("curl")
                    .args(["-sk", "--max-time", "2", &roots])
                    .output()
                    .ok()?;
                let pem = String::from_utf8_lossy(&out.stdout).into_owned();
                pem.contains("BEGIN CERTIFICATE").then_some(pem)
            }
        })
        .await;
        std::fs::write(&p.root, pem).unwrap();
        p
    }
}

async fn shop(s: &TestServer, app: &str) {
    s.create_app(app).await;
    let port = free_port();
    let m = s
        .create_machine(
            app,
            &format!("mkdir -p www && echo {app}-site > www/index.html && exec busybox httpd -f -p 127.0.0.1:{port} -h www"),
            json!({"services": [{"protocol": "tcp", "internal_port": port, "ports": [
                {"port": 80, "handlers": ["http"]}, {"port": 443, "handlers": ["tls", "http"]}]}]}),
        )
        .await;
    s.wait_state(app, m["id"].as_str().unwrap(), "started")
        .await;
}

async fn wait_active(s: &TestServer, app: &str, host: &str) -> Value {
    eventually(90, "the certificate to be issued", || async {
        let out = s.cli(&["certs", "show", host, "-a", app, "--json"]);
        let d: Value = serde_json::from_str(&stdout(&out)).ok()?;
        (d["status"] == "active").then_some(d)
    })
    .await
}

fn https(s: &TestServer, host: &str, root: &Path) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(root)
        .args([
            "--resolve",
            &format!("{host}:{}:127.0.0.1", s.https_port),
            &format!("https://{host}:{}/", s.https_port),
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A scratch dir, Pebble's plan and the server arguments pointing at it; `None` (the
/// test skips) only outside CI when Pebble is not installed.
fn setup() -> Option<(tempfile::TempDir, PebblePlan, Vec<String>)> {
    if !have_pebble() && std::env::var_os("CI").is_none() {
        eprintln!("skipped: pebble is not installed (apt-get install pebble)");
        return None;
    }
    let scratch = tempfile::tempdir().unwrap();
    let plan = plan(scratch.path());
    let args = acme_args(&plan);
    Some((scratch, plan, args))
}

fn acme_args(plan: &PebblePlan) -> Vec<String> {
    vec![
        "--driver".into(),
        "process".into(),
        "--acme-directory".into(),
        plan.directory(),
        "--acme-ca-root".into(),
        plan.https_root.display().to_string(),
    ]
}

#[tokio::test]
async fn pebble_issues_through_tls_alpn_and_the_certificate_is_served() {
    let Some((_scratch, plan, args)) = setup() else {
        return;
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s = TestServer::start_with(&args).await;
    let pebble = plan.start(s.http_port, s.https_port).await;
    shop(&s, "shop").await;

    let out = s.cli(&["certs", "add", "shop.example.test", "-a", "shop"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("Hostname                  = shop.example.test"));
    let d = wait_active(&s, "shop", "shop.example.test").await;
    assert!(
        d["certificates"][0]["issuer"]
            .as_str()
            .unwrap()
            .contains("Pebble"),
        "{d}"
    );
    eventually(10, "the proxy's log of the TLS-ALPN-01 answer", || async {
        s.log()
            .contains("answered a TLS-ALPN-01 validation")
            .then_some(())
    })
    .await;
    assert_eq!(
        https(&s, "shop.example.test", &pebble.root),
        (0, "shop-site\n".into())
    );
    // The hostname routes plain HTTP too.
    let plain = Command::new("curl")
        .args(["-sS", "-H", "Host: shop.example.test"])
        .arg(format!("http://127.0.0.1:{}/", s.http_port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "shop-site\n");
    let list = stdout(&s.cli(&["certs", "list", "-a", "shop"]));
    assert!(
        list.contains("shop.example.test") && list.contains("shop.localhost"),
        "{list}"
    );

    // A hostname belongs to one app.
    s.create_app("rival").await;
    let r = s
        .call(
            "POST",
            "/apps/rival/certificates/acme",
            Some(json!({"hostname": "shop.example.test"})),
        )
        .await;
    assert_eq!(r.status, 409, "{r:?}");

    // Kept across a restart.
    s.kill9();
    s.spawn().await;
    assert_eq!(https(&s, "shop.example.test", &pebble.root).0, 0);

    // Removed: no longer served.
    let out = s.cli(&[
        "certs",
        "remove",
        "shop.example.test",
        "-a",
        "shop",
        "--yes",
    ]);
    assert!(out.status.success(), "{out:?}");
    // Every proxy stops serving it (an agent apart hears it through the feed).
    eventually(10, "the removed hostname stops being served", || async {
        (https(&s, "shop.example.test", &pebble.root).0 != 0).then_some(())
    })
    .await;
    drop(pebble);
}

#[tokio::test]
async fn pebble_issues_through_http01_when_tls_alpn_fails() {
    let Some((_scratch, plan, args)) = setup() else {
        return;
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = TestServer::start_with(&args).await;
    // Nothing listens where Pebble tries TLS-ALPN-01.
    let pebble = plan.start(s.http_port, free_port()).await;
    shop(&s, "store").await;
    let r = s
        .call(
            "POST",
            "/apps/store/certificates/acme",
            Some(json!({"hostname": "store.example.test"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["status"], "pending_validation");
    wait_active(&s, "store", "store.example.test").await;
    assert!(s.log().contains("trying HTTP-01"), "{}", s.log());
    assert_eq!(
        https(&s, "store.example.test", &pebble.root),
        (0, "store-site\n".into())
    );
}
