//! A real DNS resolver for tests and benchmarks: `unbound` on a free loopback port,
//! answering a zone of given records (`local-data`) and nothing else (no outside
//! network), as the "host's resolver" machines' private DNS recurses to, and as the
//! peer the DNS benchmark measures against. CI installs it (`scripts/deps.sh test`).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestResolver {
    _dir: tempfile::TempDir,
    child: Child,
    pub addr: SocketAddr,
}

/// Whether tests can run unbound and dig; CI installs both.
pub fn dns_tools_available() -> Result<(), String> {
    for (tool, package) in [
        ("/usr/sbin/unbound", "unbound"),
        ("/usr/bin/dig", "bind9-dnsutils"),
    ] {
        if !Path::new(tool).exists() {
            return Err(format!("{tool} is missing (apt-get install {package})"));
        }
    }
    Ok(())
}

impl TestResolver {
    /// Starts unbound with one static zone `zone` holding `records` (each a line of
    /// zone data such as `www.example.test. 300 IN A 192.0.2.10`).
    pub fn start(zone: &str, records: &[String]) -> TestResolver {
        // A port found free may be taken before unbound binds it (then unbound exits,
        // and whoever took it answers the readiness check): try again elsewhere.
        for _ in 0..5 {
            if let Some(r) = Self::try_start(zone, records) {
                return r;
            }
        }
        panic!("unbound did not start on any of 5 free ports");
    }

    fn try_start(zone: &str, records: &[String]) -> Option<TestResolver> {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut conf = format!(
            "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  use-syslog: no\n  \
             logfile: \"\"\n  chroot: \"\"\n  username: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n  \
             do-ip6: no\n  num-threads: 1\n  access-control: 127.0.0.0/8 allow\n  \
             module-config: \"iterator\"\n  local-zone: \"{zone}\" static\n",
            dir = dir.path().display()
        );
        for r in records {
            conf.push_str(&format!("  local-data: \"{r}\"\n"));
        }
        conf.push_str("remote-control:\n  control-enable: no\n");
        let conf_path = dir.path().join("unbound.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut child = Command::new("/usr/sbin/unbound")
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start unbound (apt-get install unbound)");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            if child.try_wait().ok().flatten().is_some() {
                return None;
            }
            assert!(Instant::now() < deadline, "unbound did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Listening, and it is ours: unbound still runs.
        std::thread::sleep(Duration::from_millis(100));
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        Some(TestResolver {
            _dir: dir,
            child,
            addr,
        })
    }
}

impl Drop for TestResolver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `dig` with `args` and returns its output (`+short` answers, or the status line).
pub fn dig(args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("run dig (apt-get install bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
