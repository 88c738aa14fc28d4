//! The checks `fly deploy` and `fly config validate` run on a typed config, with
//! flyctl's messages (flytoml-and-deploys.md §5), each naming the key it is about.
//!
//! Reading and typing errors are [`crate::load`]'s; this module sees only typed values.

use std::time::Duration;

use crate::compute;
use crate::diagnostic::Diagnostic;
use crate::model::{AppConfig, ServiceCheck};

impl AppConfig {
    /// Every problem found; the config is valid when none is an error.
    pub fn validate(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        self.validate_build(&mut out);
        self.validate_deploy(&mut out);
        self.validate_checks(&mut out);
        self.validate_services(&mut out);
        self.validate_processes(&mut out);
        self.validate_mounts(&mut out);
        self.validate_restart(&mut out);
        self.validate_vm(&mut out);
        self.validate_env(&mut out);
        out
    }

    /// Also checks each group's own view: only there is a second mount an error.
    pub fn validate_groups(&self, groups: &[String]) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for g in groups {
            if !self.groups().contains(g) {
                out.push(
                    Diagnostic::error(format!(
                        "process group '{g}' is not defined; the app's groups are: {}",
                        self.groups().join(", ")
                    ))
                    .key("processes"),
                );
                continue;
            }
            let flat = self.for_group(g);
            if flat.mounts.len() > 1 {
                out.push(
                    Diagnostic::error(format!(
                        "group '{g}' has more than one [[mounts]] section defined"
                    ))
                    .key("mounts"),
                );
            }
            out.extend(flat.validate().into_iter().filter(|d| d.is_error()));
        }
        out
    }

    fn validate_build(&self, out: &mut Vec<Diagnostic>) {
        let Some(b) = &self.build else { return };
        let mut methods = Vec::new();
        if b.image.is_some() {
            methods.push("image");
        }
        if b.builder.is_some() || b.buildpacks.is_some() {
            methods.push("builder");
        }
        if b.dockerfile.is_some() || b.build_target.is_some() {
            methods.push("dockerfile");
        }
        if b.builtin.is_some() {
            methods.push("builtin");
        }
        if methods.len() > 1 {
            out.push(
                Diagnostic::warning(format!(
                    "more than one build configuration found: [{}]; keep one",
                    methods.join(", ")
                ))
                .key("build"),
            );
        }
        if let Some(c) = &b.compression {
            if c != "gzip" && c != "zstd" {
                out.push(Diagnostic::error(format!(
                    "Invalid value '{c}' for compression. Valid options are 'gzip', 'zstd', or leave unset."
                )).key("build.compression"));
            }
        }
        if let Some(l) = b.compression_level {
            if !(0..=9).contains(&l) {
                out.push(
                    Diagnostic::error(format!(
                    "Invalid value '{l}' for compression level. Must be an integer between 0 and 9."
                ))
                    .key("build.compression_level"),
                );
            }
        }
        if let Some(d) = &b.dockerfile {
            if (d.starts_with("http://") || d.starts_with("https://")) && d.contains(' ') {
                out.push(Diagnostic::error("invalid Dockerfile URL").key("build.dockerfile"));
            }
        }
    }

    fn validate_deploy(&self, out: &mut Vec<Diagnostic>) {
        let Some(d) = &self.deploy else { return };
        if let Some(cmd) = &d.release_command {
            if shlex::split(cmd).is_none() {
                out.push(
                    Diagnostic::error(format!("Can't shell split release command: '{cmd}'"))
                        .key("deploy.release_command"),
                );
            }
        }
        if let Some(s) = &d.strategy {
            if !hangar_types::DeployStrategy::ALL
                .iter()
                .any(|k| k.as_str() == s.as_str())
            {
                out.push(Diagnostic::error(format!(
                    "unsupported deployment strategy '{s}'; Apps v2 supports the following strategies: canary, rolling, immediate, bluegreen"
                )).key("deploy.strategy"));
            } else if s == "canary" && !self.mounts.is_empty() {
                out.push(
                    Diagnostic::error(
                        "error canary deployment strategy is not supported when using mounted volumes",
                    )
                    .key("deploy.strategy"),
                );
            }
        }
        if let Some(m) = d.max_unavailable {
            if m <= 0.0 {
                out.push(
                    Diagnostic::error(format!(
                        "max_unavailable must be above 0 (a fraction such as 0.33, or a number of machines), got {m}"
                    ))
                    .key("deploy.max_unavailable"),
                );
            }
        }
        if let Some(cmd) = &self.console_command {
            if shlex::split(cmd).is_none() {
                out.push(
                    Diagnostic::error(format!("Can't shell split console command: '{cmd}'"))
                        .key("console_command"),
                );
            }
        }
    }

    fn validate_checks(&self, out: &mut Vec<Diagnostic>) {
        for (name, c) in &self.checks {
            let key = format!("checks.{name}");
            match c.kind.as_deref() {
                Some("http") | Some("tcp") => {}
                _ => out.push(Diagnostic::error(format!(
                    "Can't process top level check '{name}': Missing or invalid check type, must be 'http' or 'tcp'"
                )).key(&key)),
            }
            if let Some(i) = c.interval {
                if i.0 < Duration::from_secs(2) {
                    out.push(
                        Diagnostic::error(format!(
                            "Check '{name}' interval is too short: {i}, minimum is 2 seconds"
                        ))
                        .key(&format!("{key}.interval")),
                    );
                }
            }
            if let Some(t) = c.timeout {
                if t.0 > Duration::from_secs(60) {
                    out.push(
                        Diagnostic::error(format!(
                            "Check '{name}' timeout is too long: {t}, maximum is 60 seconds"
                        ))
                        .key(&format!("{key}.timeout")),
                    );
                }
            }
            self.known_groups(out, &c.processes, "Check", &key);
        }
    }

    fn known_groups(&self, out: &mut Vec<Diagnostic>, processes: &[String], what: &str, key: &str) {
        let groups = self.groups();
        for p in processes {
            if !groups.contains(p) {
                out.push(Diagnostic::error(format!(
                    "{what} specifies '{p}' as one of its processes, but no processes are defined with that name; update fly.toml [processes] to add '{p}' process or remove it from {what}'s processes list"
                )).key(&format!("{key}.processes")));
            }
        }
    }

    fn validate_services(&self, out: &mut Vec<Diagnostic>) {
        let mut all = Vec::new();
        if let Some(h) = &self.http_service {
            all.push((
                "http_service".to_string(),
                &h.processes,
                true,
                h.checks.iter().map(|c| ("HTTP", c)).collect::<Vec<_>>(),
            ));
        }
        for (i, s) in self.services.iter().enumerate() {
            let checks = s
                .tcp_checks
                .iter()
                .map(|c| ("TCP", c))
                .chain(s.http_checks.iter().map(|c| ("HTTP", c)))
                .collect();
            all.push((
                format!("services[{i}]"),
                &s.processes,
                !s.ports.is_empty(),
                checks,
            ));
        }
        for (key, processes, has_ports, checks) in all {
            if processes.is_empty() && !self.processes.is_empty() {
                out.push(Diagnostic::error(format!(
                    "Service has no processes set but app has {} processes defined; update fly.toml to set processes for each service",
                    self.processes.len()
                )).key(&key));
            }
            self.known_groups(out, processes, "Service", &key);
            if !has_ports {
                out.push(Diagnostic::warning(
                    "WARNING: Service must expose at least one port. Add a [[services.ports]] section to fly.toml; Check docs at https://fly.io/docs/reference/configuration/#services-ports",
                ).key(&key));
            }
            for (kind, c) in checks {
                service_check_warnings(out, kind, c, &key);
            }
        }
    }

    fn validate_processes(&self, out: &mut Vec<Diagnostic>) {
        for (g, cmd) in &self.processes {
            if shlex::split(cmd).is_none() {
                out.push(Diagnostic::error(format!(
                    "Could not parse command for '{g}' process group; check [processes] section: unbalanced quotes"
                )).key(&format!("processes.{g}")));
            }
        }
    }

    fn validate_mounts(&self, out: &mut Vec<Diagnostic>) {
        for (i, m) in self.mounts.iter().enumerate() {
            let key = format!("mounts[{i}]");
            let src = &m.source;
            if let Some(size) = &m.initial_size {
                match compute::volume_gb(size) {
                    Err(e) => out.push(
                        Diagnostic::error(format!(
                            "mount '{src}' with initial_size '{size}' will fail because of: {e}"
                        ))
                        .key(&format!("{key}.initial_size")),
                    ),
                    Ok(gb) if gb < 1 => out.push(
                        Diagnostic::error(format!(
                        "mount '{src}' has an initial_size '{size}' value which is smaller than 1GB"
                    ))
                        .key(&format!("{key}.initial_size")),
                    ),
                    Ok(_) => {}
                }
            }
            if let Some(r) = m.snapshot_retention {
                if !(1..=60).contains(&r) {
                    out.push(Diagnostic::error(format!(
                        "mount '{src}' has a snapshot_retention value which is not between 1 and 60 days inclusive"
                    )).key(&format!("{key}.snapshot_retention")));
                }
            }
            let threshold = m.auto_extend_size_threshold;
            let increment = m.auto_extend_size_increment.as_deref();
            let limit = m.auto_extend_size_limit.as_deref();
            if threshold.is_some() || increment.is_some() || limit.is_some() {
                if threshold.is_some() && increment.is_none() && limit.is_none() {
                    out.push(Diagnostic::error(format!(
                        "mount '{src}' auto_extend_size_threshold, auto_extend_size_increment and auto_extend_size_limit must be all defined or none"
                    )).key(&key));
                }
                if let Some(t) = threshold {
                    if !(50..=99).contains(&t) {
                        out.push(
                            Diagnostic::error(format!(
                            "mount '{src}' auto_extend_size_threshold must be between 50 and 99"
                        ))
                            .key(&format!("{key}.auto_extend_size_threshold")),
                        );
                    }
                }
                let gb = |v: Option<&str>| v.map(compute::volume_gb);
                if !matches!(gb(increment), Some(Ok(1..=100))) {
                    out.push(
                        Diagnostic::error(format!(
                        "mount '{src}' auto_extend_size_increment must be between 1GB and 100GB"
                    ))
                        .key(&format!("{key}.auto_extend_size_increment")),
                    );
                }
                if let Some(l) = gb(limit) {
                    if !matches!(l, Ok(1..=500)) {
                        out.push(
                            Diagnostic::error(format!(
                            "mount '{src}' auto_extend_size_limit must be between 1GB and 500GB"
                        ))
                            .key(&format!("{key}.auto_extend_size_limit")),
                        );
                    }
                }
            }
            self.known_groups(out, &m.processes, "Mount", &key);
        }
    }

    fn validate_restart(&self, out: &mut Vec<Diagnostic>) {
        for (i, r) in self.restart.iter().enumerate() {
            let key = format!("restart[{i}]");
            self.known_groups(out, &r.processes, "Restart policy", &key);
            let p = r.policy.as_deref().unwrap_or("");
            if !["always", "never", "on-failure"].contains(&p) {
                out.push(
                    Diagnostic::error(format!(
                        "invalid restart policy: {p}; use \"always\", \"never\" or \"on-failure\""
                    ))
                    .key(&format!("{key}.policy")),
                );
            }
        }
    }

    fn validate_vm(&self, out: &mut Vec<Diagnostic>) {
        for (i, c) in self.vm.iter().enumerate() {
            if let Err(e) = compute::guest(c) {
                out.push(Diagnostic::error(e).key(&format!("vm[{i}]")));
            }
        }
        if let Some(c) = self
            .deploy
            .as_ref()
            .and_then(|d| d.release_command_vm.as_ref())
        {
            if let Err(e) = compute::guest(c) {
                out.push(Diagnostic::error(e).key("deploy.release_command_vm"));
            }
        }
    }

    fn validate_env(&self, out: &mut Vec<Diagnostic>) {
        for k in self.env.keys() {
            let upper = k.to_ascii_uppercase();
            let allowed = ["AWS_ACCESS_KEY_ID", "TIGRIS_ACCESS_KEY_ID"].contains(&upper.as_str());
            let looks_secret = ["KEY", "PRIVATE", "DATABASE_URL", "PASSWORD", "SECRET"]
                .iter()
                .any(|w| upper.contains(w));
            if looks_secret && !allowed {
                out.push(Diagnostic::warning(format!(
                    "'{k}' looks like a secret; values in [env] are stored in plain text in the release. Use `hangar secrets set {k}=...` instead"
                )).key(&format!("env.{k}")));
            }
        }
    }
}

fn service_check_warnings(out: &mut Vec<Diagnostic>, kind: &str, c: &ServiceCheck, key: &str) {
    let one_s = Duration::from_secs(1);
    let one_m = Duration::from_secs(60);
    for (name, v) in [("interval", c.interval), ("timeout", c.timeout)] {
        if let Some(v) = v {
            if v.0 < one_s {
                out.push(Diagnostic::warning(format!(
                    "Service {kind} check has {name} set to {v}, which is less than 1 second; it will be raised to 1 second"
                )).key(key));
            }
        }
    }
    for (name, v) in [
        ("interval", c.interval),
        ("timeout", c.timeout),
        ("grace_period", c.grace_period),
    ] {
        if let Some(v) = v {
            if v.0 > one_m {
                out.push(Diagnostic::warning(format!(
                    "Service {kind} check has {name} set to {v}, which is more than 1 minute; it will be lowered to 1 minute"
                )).key(key));
            }
        }
    }
    if let Some(g) = c.grace_period {
        if !g.0.is_zero() && g.0 < one_s {
            out.push(Diagnostic::warning(format!(
                "Service {kind} check has grace_period set to {g}, which is less than 1 second; it will be raised to 1 second"
            )).key(key));
        }
    }
}
