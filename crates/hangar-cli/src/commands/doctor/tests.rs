//! The checklist's verdicts over sample configs and volumes.

use super::*;

fn verdicts(
    text: &str,
    machines: Option<(usize, BTreeSet<String>)>,
) -> BTreeMap<&'static str, Verdict> {
    let c = hangar_appconfig::parse(text, hangar_appconfig::Format::Toml)
        .expect("parses")
        .config;
    examine(&c, machines, None, None)
        .into_iter()
        .map(|f| (f.check, f.verdict))
        .collect()
}

#[test]
fn a_production_ready_config_passes_and_a_bare_one_does_not() {
    let good = r#"
app = "good"
kill_signal = "SIGTERM"
kill_timeout = "30s"
[env]
LOG_LEVEL = "info"
[http_service]
internal_port = 8080
force_https = true
auto_stop_machines = "stop"
auto_start_machines = true
min_machines_running = 1
concurrency = { type = "requests", soft_limit = 200, hard_limit = 250 }
[[http_service.checks]]
grace_period = "10s"
interval = "15s"
path = "/healthz"
"#;
    let two = Some((2, BTreeSet::from(["ord".to_string()])));
    assert!(verdicts(good, two.clone())
        .values()
        .all(|v| *v == Verdict::Pass));
    let bad = r#"
app = "bad"
kill_signal = "SIGKILL"
[build]
image = "nginx:latest"
[env]
DB_PASSWORD = "hunter2"
SESSION = "q8Zr3Lk0vX9pT2mW7bN4cY6hJ1fD5sGa"
[http_service]
internal_port = 8080
"#;
    let v = verdicts(bad, Some((1, BTreeSet::new())));
    assert_eq!(v["HTTPS forced"], Verdict::Fail);
    assert_eq!(v["redundancy"], Verdict::Fail);
    assert_eq!(v["health checks"], Verdict::Fail);
    assert_eq!(v["graceful shutdown"], Verdict::Fail);
    assert_eq!(v["secrets in [env]"], Verdict::Fail);
    assert_eq!(v["image tags"], Verdict::Warn);
    assert_eq!(v["concurrency limits"], Verdict::Warn);
    assert_eq!(v["auto stop/start"], Verdict::Warn);
    assert_eq!(v["min_machines_running"], Verdict::Warn);
    assert!(looks_secret("SESSION", "q8Zr3Lk0vX9pT2mW7bN4cY6hJ1fD5sGa").is_some());
    assert!(looks_secret("GREETING", "hello world").is_none());
}

fn volume(id: &str, auto_backup_enabled: bool, encrypted: bool) -> Volume {
    serde_json::from_value(serde_json::json!({
        "id": id, "name": "data", "state": "created", "size_gb": 1, "region": "ord",
        "zone": "ab12", "encrypted": encrypted, "created_at": "t", "fstype": "ext4",
        "snapshot_retention": 7, "auto_backup_enabled": auto_backup_enabled,
        "host_status": "ok"
    }))
    .expect("a volume")
}

#[test]
fn volume_checks_use_the_real_volumes_when_known() {
    let text = "app = \"v\"\n[[mounts]]\nsource = \"data\"\ndestination = \"/data\"\n";
    let c = hangar_appconfig::parse(text, hangar_appconfig::Format::Toml)
        .expect("parses")
        .config;
    assert_eq!(
        volume_snapshots(&c, None).verdict,
        Verdict::Pass,
        "5 days by default"
    );
    let off = text.replace("/data\"", "/data\"\nscheduled_snapshots = false");
    let c_off = hangar_appconfig::parse(&off, hangar_appconfig::Format::Toml)
        .expect("parses")
        .config;
    assert_eq!(volume_snapshots(&c_off, None).verdict, Verdict::Warn);
    let kept = [volume("vol_a", true, true)];
    let f = volume_snapshots(&c_off, Some(&kept));
    assert_eq!(
        f.verdict,
        Verdict::Pass,
        "the real volume wins: {}",
        f.detail
    );
    assert!(f.detail.contains("7 days"), "{}", f.detail);
    let unkept = [volume("vol_a", true, true), volume("vol_b", false, false)];
    let f = volume_snapshots(&c, Some(&unkept));
    assert_eq!(f.verdict, Verdict::Warn);
    assert!(
        f.detail.contains("vol_b") && !f.detail.contains("vol_a"),
        "{}",
        f.detail
    );
    assert_eq!(volume_encryption(Some(&kept)).verdict, Verdict::Pass);
    let f = volume_encryption(Some(&unkept));
    assert_eq!(f.verdict, Verdict::Warn);
    assert!(f.detail.contains("vol_b"), "{}", f.detail);
}
