//! A real PostgreSQL for tests: the server `HANGAR_TEST_POSTGRES` names (a URL of a
//! superuser, as CI gives), or else one started here from `initdb` on a free loopback
//! port with its data in a temp dir, once per test process, and stopped when the process
//! ends. Each caller gets a database of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A PostgreSQL server tests can create databases on.
pub struct TestPostgres {
    host: String,
    port: u16,
    user: String,
    _data: Option<tempfile::TempDir>,
}

static SHARED: OnceLock<Result<TestPostgres, String>> = OnceLock::new();

/// Where Debian keeps the server's binaries (`initdb` and `postgres` are not on PATH).
fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// Whether tests can have a PostgreSQL; CI installs one.
pub fn postgres_available() -> Result<(), String> {
    TestPostgres::shared().map(|_| ())
}

impl TestPostgres {
    /// The server of this test process, started on first use.
    pub fn shared() -> Result<&'static TestPostgres, String> {
        SHARED
            .get_or_init(|| match std::env::var("HANGAR_TEST_POSTGRES") {
                Ok(url) => TestPostgres::from_url(&url),
                Err(_) => TestPostgres::start(),
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn from_url(url: &str) -> Result<TestPostgres, String> {
        let rest = url.strip_prefix("postgres://").ok_or_else(|| {
            format!("HANGAR_TEST_POSTGRES={url} is not postgres://USER@HOST:PORT")
        })?;
        let (user, hostport) = rest.split_once('@').unwrap_or(("postgres", rest));
        let hostport = hostport.split('/').next().unwrap_or(hostport);
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
        Ok(TestPostgres {
            host: host.to_string(),
            port: port.parse().map_err(|_| format!("bad port in {url}"))?,
            user: user.to_string(),
            _data: None,
        })
    }

    /// Starts a throwaway server: `initdb` into a temp dir, `postgres` on a free port.
    fn start() -> Result<TestPostgres, String> {
        let bin = bin_dir().ok_or("PostgreSQL is not installed (apt-get install postgresql)")?;
        let data = tempfile::Builder::new()
            .prefix("hangar-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let dir = data.path().join("data");
        let root = nix::unistd::geteuid().is_root();
        let owner = if root {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or("running as root needs the postgres user to run the server as")?;
            std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
            nix::unistd::chown(data.path(), Some(user.uid), Some(user.gid))
                .and_then(|()| nix::unistd::chown(&dir, Some(user.uid), Some(user.gid)))
                .map_err(|e| e.to_string())?;
            Some(user)
        } else {
            None
        };
        let as_owner = |program: &Path| {
            let mut c = Command::new(program);
            if let Some(u) = &owner {
                use std::os::unix::process::CommandExt;
                c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
            }
            c.env("LC_ALL", "C.UTF-8");
            c
        };
        let out = as_owner(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "-D"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut server = as_owner(&bin.join("postgres"));
        server
            .arg("-D")
            .arg(&dir)
            .args(["-p", &port.to_string(), "-k"])
            .arg(data.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=300",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        spawn_tied_to_this_process(server)?;
        let pg = TestPostgres {
            host: "127.0.0.1".into(),
            port,
            user: "postgres".into(),
            _data: Some(data),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while pg.psql("postgres", "SELECT 1").is_err() {
            if Instant::now() > deadline {
                return Err("PostgreSQL did not start within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(pg)
    }

    /// Runs one SQL statement with `psql` on database `db`.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                &self.host,
                "-p",
                &self.port.to_string(),
                "-U",
                &self.user,
            ])
            .args(["-d", db, "-c", sql])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A new, empty database; returns its URL.
    pub fn fresh_database(&self) -> String {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "hangar_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap();
        self.url(&name)
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{}@{}:{}/{db}", self.user, self.host, self.port)
    }

    /// Where the server listens.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Spawns `command` from a thread that lives as long as the process, with the parent
/// death signal set, so the server stops when the test process ends however it ends.
fn spawn_tied_to_this_process(mut command: Command) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        match command.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(format!("start postgres: {e}")));
            }
        }
    });
    rx.recv().map_err(|e| e.to_string())?
}
