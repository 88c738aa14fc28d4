//! The fixtures of `tests/fixtures` converted to machine configs, group by group, as
//! `hangar deploy` converts them: services and ports, compute, checks, init, mounts,
//! autostop and files, field by field where Fly's shapes matter. Reading and validating
//! the fixtures is `fixtures.rs`'s.

mod common;

use hangar_appconfig::{parse, Format};
use hangar_types::machine_config::Autostop;
use serde_json::json;

use common::{cfg, warnings, VALID};

#[test]
fn services_and_ports() {
    let c = cfg("services-multi.toml");
    assert_eq!(
        warnings(&c)
            .iter()
            .filter(|w| w.contains("must expose at least one port"))
            .count(),
        2
    );
    let c = cfg("services-ports.toml");
    let mc = c.to_machine_config("app", None).expect("converts");
    let ports = mc.services.expect("services")[0]
        .ports
        .clone()
        .expect("ports");
    assert_eq!(ports[1].port, Some(80));
    assert!(
        ports[1].handlers.is_none(),
        "a port without handlers is raw TCP"
    );
    assert_eq!(ports[2].proxy_proto_options, Some(json!({"version": "v2"})));
    assert_eq!(
        ports[0]
            .http_options
            .as_ref()
            .map(|h| h["response"]["headers"]["fly-request-id"].clone()),
        Some(json!(false))
    );
}

#[test]
fn compute_per_group() {
    let c = cfg("tomachine-compute-nodefault.toml");
    assert!(c
        .to_machine_config("app", None)
        .expect("app")
        .guest
        .is_none());
    assert!(c
        .to_machine_config("foo", None)
        .expect("foo")
        .guest
        .is_none());
    let g = c
        .to_machine_config("bar", None)
        .expect("bar")
        .guest
        .expect("guest");
    assert_eq!(
        (g.cpu_kind.as_deref(), g.cpus, g.memory_mb),
        (Some("performance"), Some(4), Some(8192))
    );

    let c = cfg("tomachine-compute.toml");
    let g = c
        .to_machine_config("app", None)
        .expect("app")
        .guest
        .expect("guest");
    assert_eq!((g.cpus, g.memory_mb), (Some(2), Some(512)));
    let g = c
        .to_machine_config("whisper", None)
        .expect("w")
        .guest
        .expect("guest");
    assert_eq!(
        (g.cpus, g.memory_mb, g.gpus),
        (Some(8), Some(65536), Some(1))
    );
    let g = c
        .to_machine_config("isolated", None)
        .expect("i")
        .guest
        .expect("guest");
    assert_eq!(
        (g.cpus, g.memory_mb),
        (Some(1), Some(256)),
        "sections are not merged"
    );
    assert_eq!(g.host_dedication_id.as_deref(), Some("isolated-host"));

    let c = cfg("tomachine-hostdedicationid.toml");
    let g = |group| {
        c.to_machine_config(group, None)
            .expect("converts")
            .guest
            .and_then(|g| g.host_dedication_id)
    };
    assert_eq!(g("app").as_deref(), Some("top-level"));
    assert_eq!(g("special").as_deref(), Some("own"));
}

#[test]
fn checks_take_the_http_service_port_or_say_why_not() {
    let mut c = cfg("tomachine-default-for-new-apps.toml");
    let mc = c.to_machine_config("app", None).expect("converts");
    assert_eq!(mc.checks.expect("checks")["alive"].port, Some(8080));
    c.http_service = None;
    let e = c.to_machine_config("app", None).expect_err("no port");
    assert!(e.0.contains("has no port set"), "{e}");
}

#[test]
fn experimental_init() {
    let mc = cfg("tomachine-experimental.toml")
        .to_machine_config("app", None)
        .expect("converts");
    assert_eq!(mc.init.cmd, Some(vec!["/override".into(), "this".into()]));
    assert_eq!(mc.init.entrypoint, Some(vec!["/entry".into()]));
    assert_eq!(mc.init.exec, Some(vec!["/exec".into(), "all".into()]));
}

#[test]
fn scoping_of_mounts_services_and_checks() {
    let c = cfg("tomachine-mounts.toml");
    let mounts = |g| {
        let m = c.to_machine_config(g, None).expect("converts").mounts;
        m.map(|m| serde_json::to_value(m).unwrap())
    };
    assert_eq!(
        mounts("app"),
        Some(json!([{"name": "data", "path": "/data"}]))
    );
    assert_eq!(
        mounts("back"),
        Some(json!([{"name": "trash", "path": "/trash"}]))
    );
    assert_eq!(mounts("hola"), None);

    let c = cfg("tomachine-processgroups.toml");
    let view = |g| {
        let mc = c.to_machine_config(g, None).expect("converts");
        let ports: Vec<u16> = mc
            .services
            .unwrap_or_default()
            .iter()
            .map(|s| s.internal_port)
            .collect();
        let checks: Vec<String> = mc.checks.unwrap_or_default().into_keys().collect();
        (ports, checks)
    };
    assert_eq!(
        view("app"),
        (vec![8080, 1111], vec!["listening".to_string()])
    );
    assert_eq!(view("vpn"), (vec![9999, 1111], vec![]));
    assert_eq!(view("foo"), (vec![1111], vec!["listening".to_string()]));
}

#[test]
fn autostart_and_autostop() {
    let mc = cfg("tomachine-services.toml")
        .to_machine_config("app", None)
        .expect("converts");
    let s = mc.services.expect("services");
    assert_eq!(
        (s[0].autostart, s[0].autostop),
        (Some(true), Some(Autostop::Stop))
    );
    assert_eq!(
        (s[1].autostart, s[1].autostop),
        (Some(false), Some(Autostop::Suspend))
    );
    assert_eq!((s[2].autostart, s[2].autostop), (None, None));
}

#[test]
fn the_worked_example_converts_field_by_field() {
    let c = cfg("tomachine.toml");
    let mc = c.to_machine_config("app", None).expect("converts");
    let v = serde_json::to_value(&mc).expect("json");
    assert_eq!(
        v["env"],
        json!({"FOO": "BAR", "PRIMARY_REGION": "mia", "FLY_PROCESS_GROUP": "app"})
    );
    assert_eq!(
        v["services"],
        json!([{"protocol": "tcp", "internal_port": 8080, "ports": [
            {"port": 80, "handlers": ["http"], "force_https": true},
            {"port": 443, "handlers": ["http", "tls"]}
        ]}])
    );
    assert_eq!(v["metadata"]["fly_platform_version"], "v2");
    assert_eq!(v["metadata"]["fly_process_group"], "app");
    assert_eq!(v["metrics"], json!({"port": 9999, "path": "/metrics"}));
    assert_eq!(
        v["statics"],
        json!([{"guest_path": "/guest/path", "url_prefix": "/url/prefix"}])
    );
    assert_eq!(v["mounts"], json!([{"name": "data", "path": "/data"}]));
    assert_eq!(v["checks"]["status"]["path"], "/status");
    assert_eq!(v["checks"]["status"]["interval"], "10s");
    assert_eq!(
        v["stop_config"],
        json!({"signal": "SIGTERM", "timeout": "10s"})
    );
    assert_eq!(v["init"]["swap_size_mb"], 512);
    assert_eq!(v["restart"], json!({"policy": "always"}));
    assert_eq!(v["dns"], json!({"nameservers": ["1.2.3.4"]}));

    let rc = c
        .release_command_config("registry/foo:1")
        .expect("converts")
        .expect("has a release command");
    assert_eq!(rc.init.cmd, Some(vec!["migrate-db".into()]));
    let g = rc.guest.expect("guest");
    assert_eq!(
        (g.cpu_kind.as_deref(), g.cpus, g.memory_mb),
        (Some("performance"), Some(2), Some(4096))
    );
    assert_eq!(
        rc.env.as_ref().map(|e| e["RELEASE_COMMAND"].as_str()),
        Some("1")
    );
    assert!(rc.services.is_none() && rc.mounts.is_none() && rc.checks.is_none());
    assert_eq!(rc.auto_destroy, Some(true));
}

#[test]
fn local_files_are_read_where_fly_toml_is_and_never_by_the_converter() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.conf"), b"listen 8080\n").unwrap();
    std::fs::write(
        dir.path().join("mc.json"),
        r#"{"dns": {"skip_registration": true}}"#,
    )
    .unwrap();
    let text = "app = 'f'\nmachine_config = 'mc.json'\n[[files]]\nguest_path = '/etc/app.conf'\nlocal_path = 'app.conf'\n";
    let mut c = parse(text, Format::Toml).expect("parses").config;
    let e = c
        .to_machine_config("app", None)
        .expect_err("not read by the converter");
    assert!(
        e.0.contains("is a file") || e.0.contains("local_path"),
        "{e}"
    );
    c.inline_local_files(dir.path()).expect("inlined");
    let mc = c.to_machine_config("app", None).expect("converts");
    let files = mc.files.expect("files");
    assert_eq!(files[0].raw_value.as_deref(), Some("bGlzdGVuIDgwODAK"));
    assert_eq!(mc.dns, Some(json!({"skip_registration": true})));
    let missing = parse(
        "[[files]]\nguest_path = '/x'\nlocal_path = 'nope'\n",
        Format::Toml,
    )
    .expect("parses")
    .config
    .inline_local_files(dir.path())
    .expect_err("missing file");
    assert!(missing.0.contains("read local_path nope"), "{missing}");
}

#[test]
fn machine_configs_leave_out_empty_fields_as_fly_does() {
    for name in VALID.iter().filter(|n| n.starts_with("tomachine")) {
        let c = cfg(name);
        for g in c.groups() {
            let mc = c
                .to_machine_config(&g, None)
                .unwrap_or_else(|e| panic!("{name} group {g}: {e}"));
            let mut found =
                hangar_types::omit::empties(&serde_json::to_value(&mc).expect("json"), "config");
            // `init` is a struct Fly always sends, and an empty command list in it
            // means "none of the image's": both are kept.
            found.retain(|f| !f.ends_with("config.init") && !f.contains("config.init."));
            assert!(found.is_empty(), "{name} group {g}: {found:?}");
        }
    }
}
