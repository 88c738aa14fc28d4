//! A real S3-compatible server for tests: `s3s-fs` (an S3 server over a directory,
//! which checks every request's Signature Version 4) on a free loopback port, with a
//! fresh access key and one bucket, its objects plain files a test can look at. CI
//! installs `s3s-fs` (`scripts/deps.sh test`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestBucket {
    dir: tempfile::TempDir,
    child: Child,
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

/// Where `s3s-fs` is: on `PATH` or where `cargo install` puts it.
fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(home.map(|h| h.join(".cargo/bin")))
        .chain([PathBuf::from("/usr/local/cargo/bin")])
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
}

/// Whether tests can have an S3 server; CI installs one.
pub fn s3_available() -> Result<(), String> {
    binary().map(|_| ()).ok_or_else(|| {
        "s3s-fs is missing (scripts/deps.sh test installs it with cargo install)".into()
    })
}

fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    let f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut &f, &mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TestBucket {
    /// Starts the server with bucket `snapshots`.
    pub fn start() -> TestBucket {
        let bin = binary().expect("s3s-fs is installed (scripts/deps.sh test)");
        let dir = tempfile::tempdir().unwrap();
        let bucket = "snapshots".to_string();
        // A bucket of s3s-fs is a directory under its root.
        std::fs::create_dir(dir.path().join(&bucket)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (access_key, secret_key) = (format!("AK{}", random_hex(8)), random_hex(20));
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", &access_key, "--secret-key", &secret_key])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        TestBucket {
            dir,
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket,
            access_key,
            secret_key,
        }
    }

    /// The environment a client of the bucket needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
        ]
    }

    /// Where the bucket's objects are on disk.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join(&self.bucket)
    }

    /// The objects kept under `prefix` (a path in the bucket), as relative keys.
    pub fn objects(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.root().join(prefix), &self.root(), &mut out);
        out.sort();
        out
    }
}

fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, root, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            let rel = rel.to_string_lossy().into_owned();
            // s3s-fs keeps its own bookkeeping beside the objects.
            if !rel.contains(".s3s") && !rel.ends_with(".json") {
                out.push(rel);
            }
        }
    }
}

impl Drop for TestBucket {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
