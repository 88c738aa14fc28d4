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
    /// For a server of a test's own (run by `pg_ctl`): how to stop and restart it.
    own: Option<Own>,
}

struct Own {
    pg_ctl: PathBuf,
    dir: PathBuf,
    options: String,
    uid: Option<(u32, u32)>,
}

impl Own {
    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let mut c = Command::new(&self.pg_ctl);
        if let Some((uid, gid)) = self.uid {
            use std::os::unix::process::CommandExt;
            c.uid(uid).gid(gid);
        }
        let out = c
            .arg("-D")
            .arg(&self.dir)
            .args(args)
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if let Some(own) = &self.own {
            let _ = own.pg_ctl(&["-m", "immediate", "stop"]);
        }
    }
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
                Err(_) => TestPostgres::start(&["fsync=off"]),
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
            own: None,
        })
    }

    /// A server of its own with the durability SQLite has under the store (WAL with
    /// `synchronous=NORMAL`: every commit written, flushed at checkpoints), for
    /// benchmarks that compare the two.
    pub fn start_like_sqlite() -> Result<TestPostgres, String> {
        TestPostgres::start(&["synchronous_commit=off"])
    }

    /// Starts a throwaway server: `initdb` into a temp dir, `postgres` on a free port,
    /// with extra `-c` settings, stopped when this process ends.
    fn start(settings: &[&str]) -> Result<TestPostgres, String> {
        let (bin, data, dir, owner) = init()?;
        let port = free_port()?;
        let mut server = as_owner(&bin.join("postgres"), owner.as_ref());
        server
            .arg("-D")
            .arg(&dir)
            .args(["-p", &port.to_string(), "-k"])
            .arg(data.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
            ])
            .args(settings.iter().flat_map(|s| ["-c", s]))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        spawn_tied_to_this_process(server)?;
        let pg = TestPostgres {
            host: "127.0.0.1".into(),
            port,
            user: "postgres".into(),
            _data: Some(data),
            own: None,
        };
        pg.wait_up()?;
        Ok(pg)
    }

    /// A server of the caller's own, which it may restart; stopped when dropped.
    pub fn start_own() -> Result<TestPostgres, String> {
        let (bin, data, dir, owner) = init()?;
        let port = free_port()?;
        let own = Own {
            pg_ctl: bin.join("pg_ctl"),
            dir,
            options: format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                data.path().display()
            ),
            uid: owner.map(|u| (u.uid.as_raw(), u.gid.as_raw())),
        };
        let log = data.path().join("log");
        own.pg_ctl(&[
            "-w",
            "-l",
            &log.display().to_string(),
            "-o",
            &own.options,
            "start",
        ])?;
        let pg = TestPostgres {
            host: "127.0.0.1".into(),
            port,
            user: "postgres".into(),
            _data: Some(data),
            own: Some(own),
        };
        pg.wait_up()?;
        Ok(pg)
    }

    /// Restarts a server of the caller's own (`pg_ctl restart -m fast`: every session
    /// ends, as when PostgreSQL is restarted or fails over).
    pub fn restart(&self) -> Result<(), String> {
        let own = self
            .own
            .as_ref()
            .ok_or("only a server of one's own restarts")?;
        own.pg_ctl(&["-w", "-m", "fast", "-o", &own.options, "restart"])
    }

    /// Stops a server of the caller's own (`-m fast`), as an outage would.
    pub fn stop(&self) -> Result<(), String> {
        let own = self
            .own
            .as_ref()
            .ok_or("only a server of one's own stops")?;
        own.pg_ctl(&["-w", "-m", "fast", "stop"])
    }

    /// Starts again a server of the caller's own that [`TestPostgres::stop`] stopped.
    pub fn start_again(&self) -> Result<(), String> {
        let own = self
            .own
            .as_ref()
            .ok_or("only a server of one's own starts")?;
        let log = own.dir.with_file_name("log");
        own.pg_ctl(&[
            "-w",
            "-l",
            &log.display().to_string(),
            "-o",
            &own.options,
            "start",
        ])?;
        self.wait_up()
    }

    fn wait_up(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.psql("postgres", "SELECT 1").is_err() {
            if Instant::now() > deadline {
                return Err("PostgreSQL did not start within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
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
        if let Err(e) = self.psql("postgres", &format!("CREATE DATABASE {name}")) {
            panic!("create the test database {name}: {e}");
        }
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

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// A command run as the user that owns the server's files.
fn as_owner(program: &Path, owner: Option<&nix::unistd::User>) -> Command {
    let mut c = Command::new(program);
    if let Some(u) = owner {
        use std::os::unix::process::CommandExt;
        c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
    }
    c.env("LC_ALL", "C.UTF-8");
    c
}

/// `initdb` into a new temp dir, as the `postgres` user when this is root (the server
/// refuses to run as root): the binaries' dir, the temp dir, the data dir, the owner.
fn init() -> Result<
    (
        PathBuf,
        tempfile::TempDir,
        PathBuf,
        Option<nix::unistd::User>,
    ),
    String,
> {
    let bin = bin_dir().ok_or("PostgreSQL is not installed (apt-get install postgresql)")?;
    sweep_stale_servers();
    let data = tempfile::Builder::new()
        .prefix("hangar-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dir = data.path().join("data");
    let owner = if nix::unistd::geteuid().is_root() {
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
    let out = as_owner(&bin.join("initdb"), owner.as_ref())
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
    Ok((bin, data, dir, owner))
}

/// Removes the data dirs earlier test processes left (the server stops with its test
/// process, but a dir held by a static is never dropped): those older than ten
/// minutes whose server is not running.
fn sweep_stale_servers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let ours = e.file_name().to_string_lossy().starts_with("hangar-pg-");
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|at| at.elapsed().is_ok_and(|age| age.as_secs() > 600));
        if !ours || !old {
            continue;
        }
        let pid = std::fs::read_to_string(path.join("data").join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok());
        let running = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !running {
            let _ = std::fs::remove_dir_all(&path);
        }
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
