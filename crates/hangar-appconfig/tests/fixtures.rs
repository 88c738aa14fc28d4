//! Every fixture in `tests/fixtures` (one per shape flyctl's own suite covers) is read
//! the way `hangar config validate` and `hangar deploy` read it, and what a user would
//! see is asserted: the typed values and the errors. What each converts to, machine
//! config by process group, is `machine_config.rs`'s.

mod common;

use hangar_appconfig::{load, parse, AppConfig, AutoStop, Format, LoadError};

use serde_json::json;

use common::{cfg, fixture, read, warnings, VALID};

fn errors(c: &AppConfig) -> Vec<String> {
    c.validate()
        .into_iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect()
}

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
fn the_old_format_reads_as_its_current_form() {
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
fn machine_checks_are_read() {
    let c = cfg("tomachine-machinechecks.toml");
    assert_eq!(
        c.machine_checks[0].image.as_deref(),
        Some("curlimages/curl")
    );
    assert_eq!(c.services[0].machine_checks[0].command, vec!["./check"]);
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
