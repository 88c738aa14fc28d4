//! Every fixture in `tests/fixtures` (one per shape flyctl's own suite covers) is read
//! the way `hangar config validate` and `hangar deploy` read it, and what a user would
//! see is asserted: the typed values, the machine config per group, and the errors.

use std::path::{Path, PathBuf};

use hangar_appconfig::{load, parse, AppConfig, AutoStop, Format, LoadError, Loaded};
use hangar_types::machine_config::Autostop;
use serde_json::json;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(name: &str) -> Loaded {
    match load(&fixture(name)) {
        Ok(l) => l,
        Err(e) => panic!("{name} should load: {e}"),
    }
}

fn cfg(name: &str) -> AppConfig {
    read(name).config
}

fn errors(c: &AppConfig) -> Vec<String> {
    c.validate()
        .into_iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect()
}

fn warnings(c: &AppConfig) -> Vec<String> {
    c.validate()
        .into_iter()
        .filter(|d| !d.is_error())
        .map(|d| d.to_string())
        .collect()
}

const VALID: &[&str] = &[
    "app-name.toml",
    "build-with-args.toml",
    "build.toml",
    "compose-autodetect.toml",
    "compose.toml",
    "docker.toml",
    "env-list.toml",
    "experimental-alt.toml",
    "format-quirks.toml",
    "image.toml",
    "mounts-array.toml",
    "old-format.toml",
    "old-pg-checks.toml",
    "old-processes.toml",
    "processes-multi.toml",
    "processes-multiwithapp.toml",
    "processes-none.toml",
    "processes-one.toml",
    "services-emptysection.toml",
    "services-multi.toml",
    "services-ports.toml",
    "setters-deploy.toml",
    "setters-experimental.toml",
    "setters-httpservice.toml",
    "setters-processes.toml",
    "setters-service.toml",
    "tomachine-compute-nodefault.toml",
    "tomachine-compute.toml",
    "tomachine-default-for-new-apps.toml",
    "tomachine-experimental.toml",
    "tomachine-hostdedicationid.toml",
    "tomachine-machinechecks.toml",
    "tomachine-mounts.toml",
    "tomachine-processgroups.toml",
    "tomachine-services.toml",
    "tomachine.toml",
];

#[test]
fn every_valid_fixture_parses_validates_and_converts_for_each_group() {
    let all: Vec<_> = std::fs::read_dir(fixture(""))
        .expect("fixtures dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(all.len(), 41, "one fixture per shape");
    for name in VALID {
        let c = cfg(name);
        assert!(errors(&c).is_empty(), "{name}: {:?}", errors(&c));
        for g in c.groups() {
            if *name == "tomachine-default-for-new-apps.toml" || name.starts_with("tomachine") {
                c.to_machine_config(&g, None)
                    .unwrap_or_else(|e| panic!("{name} group {g}: {e}"));
            }
        }
    }
}

#[test]
fn an_integer_concurrency_is_refused_naming_the_key_line_and_column() {
    let e = load(&fixture("always-invalid-v2.toml")).expect_err("invalid");
    let LoadError::Invalid(d) = e else {
        panic!("expected an invalid config")
    };
    let text = d.to_string();
    assert!(
        text.contains("Unknown type for service concurrency: int64"),
        "{text}"
    );
    assert!(text.contains("services[0].concurrency"), "{text}");
    let loc = d.location.expect("located");
    assert_eq!((loc.line, loc.column), (13, 15), "{text}");
}

#[test]
fn legacy_shapes_read_as_their_current_forms() {
    let c = cfg("env-list.toml");
    assert_eq!(
        serde_json::to_value(&c.env).expect("json"),
        json!({"LISTEN": "0.0.0.0", "WORKERS": "8", "DEBUG": "false"})
    );
    let c = cfg("experimental-alt.toml");
    let exp = c.experimental.clone().expect("experimental");
    assert_eq!(exp.cmd, Some(vec!["bundle exec puma".to_string()]));
    assert_eq!(exp.exec, Some(vec!["/bin/app --serve".to_string()]));
    assert_eq!(c.kill_timeout.map(|d| d.to_string()), Some("3s".into()));
    assert_eq!(
        (c.metrics[0].port, c.metrics[0].path.as_str()),
        (9091, "/prom")
    );

    let c = cfg("format-quirks.toml");
    assert_eq!(c.vm[0].memory.as_deref(), Some("512"));
    assert_eq!(c.mounts[0].initial_size.as_deref(), Some("200"));
    assert_eq!(c.mounts[0].snapshot_retention, Some(14));

    let c = cfg("old-format.toml");
    let s = &c.services[0];
    assert_eq!(s.internal_port, 8080);
    assert_eq!(s.protocol, "", "protocol has no default");
    assert_eq!(s.auto_stop_machines, Some(AutoStop::Off));
    let conc = s.concurrency.clone().expect("concurrency");
    assert_eq!(
        (conc.kind.as_deref(), conc.soft_limit, conc.hard_limit),
        (Some("requests"), Some(12), Some(23))
    );
    assert_eq!(s.ports[0].port, Some(80));
    assert_eq!(
        s.tcp_checks[0].interval.map(|d| d.to_string()),
        Some("10s".into())
    );
    assert_eq!(
        s.http_checks[0].timeout.map(|d| d.to_string()),
        Some("3s".into())
    );
    assert!(s.http_checks[0].grace_period.is_none());
    assert_eq!(
        s.http_checks[0].headers.get("Empty").map(String::as_str),
        Some("")
    );
    assert_eq!(
        c.build.as_ref().and_then(|b| b.build_target.as_deref()),
        Some("release")
    );
    // Header values that are numbers or booleans read as strings.
    let headers = &s.http_checks[1].headers;
    assert_eq!(
        (
            headers["fly-healthcheck"].as_str(),
            headers["metoo"].as_str(),
            headers["origin"].as_str()
        ),
        ("1", "true", "hangar")
    );
    assert!(c.experimental.is_none() && c.processes.is_empty());
    assert_eq!(c.mounts[0].source, "data");
    // A zero threshold means "not set": no auto-extend, and no error.
    assert_eq!(c.mounts[0].auto_extend_size_threshold, None);
    assert!(errors(&c).is_empty(), "{:?}", errors(&c));
    assert_eq!(c.metrics[0].port, 9091);

    let c = cfg("old-pg-checks.toml");
    assert!(c.checks["pg"].headers.is_empty());
    let c = cfg("old-processes.toml");
    assert!(c.app.is_empty());
    assert_eq!(c.processes["worker"], "bin/worker");
    assert!(cfg("services-emptysection.toml").services.is_empty());
    assert_eq!(
        cfg("compose.toml")
            .build
            .and_then(|b| b.compose)
            .and_then(|c| c.file),
        Some("stack.yaml".into())
    );
    assert!(cfg("compose-autodetect.toml")
        .build
        .and_then(|b| b.compose)
        .is_some());
    assert_eq!(
        cfg("build-with-args.toml").build.expect("build").args["RETRIES"],
        "3"
    );
}

#[test]
fn default_groups() {
    assert_eq!(cfg("processes-multi.toml").default_group(), "bar");
    assert_eq!(cfg("processes-multiwithapp.toml").default_group(), "app");
    assert_eq!(cfg("processes-none.toml").groups(), vec!["app"]);
    assert_eq!(cfg("processes-one.toml").default_group(), "web");
}

#[test]
fn full_reference_parses_round_trips_and_fails_validation_for_its_reasons() {
    let c = cfg("full-reference.toml");
    let errs = errors(&c).join("\n");
    assert!(
        errs.contains("unsupported deployment strategy 'rolling-eyes'"),
        "{errs}"
    );
    assert!(errs.contains("Service has no processes set"), "{errs}");
    assert!(
        errs.contains("specifies 'app' as one of its processes"),
        "{errs}"
    );
    assert!(warnings(&c)
        .join("\n")
        .contains("more than one build configuration"));
    let as_json = serde_json::to_string(&c).expect("json");
    let from_json = parse(&as_json, Format::Json).expect("json parses").config;
    assert_eq!(from_json, c);
    let as_yaml = serde_yaml::to_string(&c).expect("yaml");
    let from_yaml = parse(&as_yaml, Format::Yaml).expect("yaml parses").config;
    assert_eq!(from_yaml, c);
    let as_toml = c.to_toml("2026-01-01T00:00:00Z").expect("writes");
    assert!(as_toml.starts_with("# fly.toml app configuration file generated for everything"));
    let from_toml = parse(&as_toml, Format::Toml).expect("toml parses").config;
    assert_eq!(from_toml, c);
    assert!(read("full-reference.toml").unknown_keys.is_empty());
}

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
fn machine_checks_are_read() {
    let c = cfg("tomachine-machinechecks.toml");
    assert_eq!(
        c.machine_checks[0].image.as_deref(),
        Some("curlimages/curl")
    );
    assert_eq!(c.services[0].machine_checks[0].command, vec!["./check"]);
}

#[test]
fn scoping_of_mounts_services_and_checks() {
    let c = cfg("tomachine-mounts.toml");
    let mounts = |g| c.to_machine_config(g, None).expect("converts").mounts;
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
fn invalid_fixtures_are_refused_with_their_reasons() {
    let c = cfg("validate-groups.toml");
    let errs = errors(&c).join("\n");
    assert!(
        errs.contains("canary deployment strategy is not supported when using mounted volumes"),
        "{errs}"
    );
    assert!(!c.validate_groups(&["app".into()]).is_empty());
    assert!(c.validate_groups(&["foo".into()]).is_empty());

    let mut c = cfg("validate-mounts.toml");
    let errs = errors(&c).join("\n");
    assert!(
        errs.contains("has an initial_size '15Mb' value which is smaller than 1GB"),
        "{errs}"
    );
    assert!(
        errs.contains("mount 'weird' with initial_size 'unparseable' will fail"),
        "{errs}"
    );
    c.mounts.iter_mut().for_each(|m| m.initial_size = None);
    let errs = c.validate_groups(&["app".into()]);
    assert!(errs[0]
        .to_string()
        .contains("group 'app' has more than one [[mounts]] section defined"));

    let c = cfg("validate-services.toml");
    let errs = errors(&c).join("\n");
    assert!(
        errs.contains("Service has no processes set but app has 2 processes defined"),
        "{errs}"
    );
    assert!(c.validate_groups(&["success".into()]).is_empty());
}

#[test]
fn wrong_values_and_syntax_name_key_line_and_column() {
    let text = "app = \"x\"\n\n[http_service]\n  internal_port = \"eighty\"\n";
    let LoadError::Invalid(d) = parse(text, Format::Toml).expect_err("bad type") else {
        panic!("invalid")
    };
    assert_eq!(d.key.as_deref(), Some("http_service.internal_port"));
    let loc = d.location.expect("located");
    assert_eq!((loc.line, loc.column), (4, 19), "{d}");
    assert!(
        d.to_string()
            .contains("http_service.internal_port (line 4, column 19)"),
        "{d}"
    );

    let LoadError::Invalid(d) = parse("app = \n", Format::Toml).expect_err("syntax") else {
        panic!("invalid")
    };
    assert_eq!(d.location.map(|l| l.line), Some(1), "{d}");

    let l = parse(
        "app = 'x'\n[http_service]\ninternal_prot = 8080\n",
        Format::Toml,
    )
    .expect("loads");
    assert_eq!(l.unknown_keys.len(), 1);
    let w = l.unknown_keys[0].to_string();
    assert!(
        w.contains("http_service.internal_prot (line 3, column"),
        "{w}"
    );

    let d = parse("[deploy]\nstrategy = 'yolo'\n", Format::Toml).expect("loads");
    let errs = d.place(d.config.validate());
    assert!(
        errs[0]
            .to_string()
            .starts_with("deploy.strategy (line 2, column 12)"),
        "{}",
        errs[0]
    );
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
fn a_config_toml_cannot_hold_is_an_error_not_an_empty_file() {
    let c = parse(
        r#"{"app": "n", "experimental": {"attached": {"secrets": null}}}"#,
        Format::Json,
    )
    .expect("parses")
    .config;
    let e = c.to_toml("now").expect_err("null has no TOML form");
    assert!(e.contains("cannot be written as TOML"), "{e}");
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
