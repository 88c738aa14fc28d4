//! fly.toml → machine config for one process group, field by field as flyctl's
//! `ToMachineConfig` does (flytoml-and-deploys.md §6), and the configs of the special
//! machines a deploy launches (the release command).
//!
//! Which machines to create or update, and when, is the deployer's business, not this
//! module's.

use std::collections::BTreeMap;

use base64::Engine;
use hangar_types::machine_config::{
    Autostop, MachineCheck, MachineFile, MachinePort, MachineRestart, MachineService,
    ServiceConcurrency, StopConfig,
};
use hangar_types::volume::MachineMount;
use hangar_types::{MachineConfig, Signal};
use serde_json::{json, Value};

use crate::compute;
use crate::model::{AppConfig, AutoStop, Concurrency, HttpService, Mount, Service, ServiceCheck};

/// Metadata keys a deploy writes on machines (§6.2).
pub mod metadata {
    pub const PLATFORM_VERSION: &str = "fly_platform_version";
    pub const PROCESS_GROUP: &str = "fly_process_group";
    pub const RELEASE_ID: &str = "fly_release_id";
    pub const RELEASE_VERSION: &str = "fly_release_version";
    pub const FLYCTL_VERSION: &str = "fly_flyctl_version";
    pub const CANARY: &str = "fly_canary";
    pub const BLUEGREEN_TAG: &str = "fly_bluegreen_deployment_tag";
    /// The group of release-command machines.
    pub const RELEASE_COMMAND_GROUP: &str = "fly_app_release_command";
}

/// Why a group's machine config cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConversionError(pub String);

fn err(m: impl Into<String>) -> ConversionError {
    ConversionError(m.into())
}

impl AppConfig {
    /// The machine config for `group`, starting from `existing` when updating a machine
    /// (what fly.toml does not manage is kept; what it manages is replaced).
    pub fn to_machine_config(
        &self,
        group: &str,
        existing: Option<&MachineConfig>,
    ) -> Result<MachineConfig, ConversionError> {
        let flat = self.for_group(group);
        let mut mc = existing.cloned().unwrap_or_default();
        if let Some(overlay) = self.machine_config_overlay()? {
            overlay_json(&mut mc, overlay)?;
        }
        mc.metrics = machine_metrics(&flat);
        let exp = self.experimental.clone().unwrap_or_default();
        mc.init.cmd = process_command(&flat, group)?.or_else(|| exp.cmd.clone());
        mc.init.entrypoint = exp.entrypoint.clone();
        mc.init.exec = exp.exec.clone();
        mc.init.swap_size_mb = self.swap_size_mb;
        let mut md = mc.metadata.take().unwrap_or_default();
        md.insert(metadata::PLATFORM_VERSION.into(), "v2".into());
        md.insert(metadata::PROCESS_GROUP.into(), group.into());
        md.insert(
            metadata::FLYCTL_VERSION.into(),
            env!("CARGO_PKG_VERSION").into(),
        );
        mc.metadata = Some(md);
        mc.services = machine_services(&flat);
        mc.checks = machine_checks(&flat, group)?;
        let mut env = self.env.clone();
        env.insert("FLY_PROCESS_GROUP".into(), group.into());
        if let Some(r) = self.primary_region.as_ref().filter(|r| !r.is_empty()) {
            env.insert("PRIMARY_REGION".into(), r.clone());
        }
        mc.env = Some(env);
        mc.statics = (!self.statics.is_empty())
            .then(|| serde_json::to_value(&self.statics).unwrap_or(Value::Null));
        mc.mounts =
            (!flat.mounts.is_empty()).then(|| flat.mounts.iter().map(machine_mount).collect());
        mc.stop_config = self.stop_config()?;
        mc.files = self.machine_files()?;
        if let Some(c) = self.compute_for(group) {
            let mut g = compute::guest(c).map_err(err)?;
            if g.host_dedication_id.is_none() {
                g.host_dedication_id = self.host_dedication_id.clone();
            }
            mc.guest = Some(g);
        }
        mc.restart = machine_restart(&flat)?;
        Ok(mc)
    }

    /// `stop_config` from `kill_signal`/`kill_timeout`; none when neither is set.
    fn stop_config(&self) -> Result<Option<StopConfig>, ConversionError> {
        if self.kill_signal.is_none() && self.kill_timeout.is_none() {
            return Ok(None);
        }
        let signal = match &self.kill_signal {
            None => None,
            Some(s) => Some(
                s.parse::<Signal>()
                    .map_err(|e| err(format!("kill_signal: {}", e.0)))?,
            ),
        };
        Ok(Some(StopConfig {
            signal,
            timeout: self.kill_timeout,
        }))
    }

    /// Every `[[files]]` entry, for every group (flyctl merges them app-wide). Local
    /// files must have been read in by [`AppConfig::inline_local_files`] where they are.
    fn machine_files(&self) -> Result<Option<Vec<MachineFile>>, ConversionError> {
        if self.files.is_empty() {
            return Ok(None);
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut out = Vec::new();
        for f in &self.files {
            let raw_value = match (&f.raw_value, &f.local_content, &f.local_path) {
                (Some(raw), _, _) => Some(b64.encode(raw)),
                (None, Some(content), _) => Some(content.clone()),
                (None, None, Some(path)) => {
                    return Err(err(format!(
                        "[[files]] {}: local_path {path} is read where fly.toml is (hangar deploy does it); send its content instead",
                        f.guest_path
                    )))
                }
                (None, None, None) => None,
            };
            out.push(MachineFile {
                guest_path: f.guest_path.clone(),
                raw_value,
                secret_name: f.secret_name.clone(),
                ..Default::default()
            });
        }
        Ok(Some(out))
    }

    /// Reads what fly.toml names on the local disk — `[[files]] local_path` and a
    /// `machine_config` file — into the config, so whoever converts it needs no access
    /// to that disk. Paths are relative to `dir`.
    pub fn inline_local_files(&mut self, dir: &std::path::Path) -> Result<(), ConversionError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        for f in &mut self.files {
            if f.raw_value.is_some() || f.local_content.is_some() {
                continue;
            }
            if let Some(path) = &f.local_path {
                let bytes = std::fs::read(dir.join(path)).map_err(|e| {
                    err(format!(
                        "[[files]] {}: read local_path {path}: {e}",
                        f.guest_path
                    ))
                })?;
                f.local_content = Some(b64.encode(bytes));
            }
        }
        let slots = [
            self.experimental
                .as_mut()
                .and_then(|e| e.machine_config.as_mut()),
            self.machine_config.as_mut(),
        ];
        for mc in slots.into_iter().flatten() {
            if !mc.trim().is_empty() && !mc.trim_start().starts_with('{') {
                let path = dir.join(mc.as_str());
                *mc = std::fs::read_to_string(&path)
                    .map_err(|e| err(format!("machine_config: read {}: {e}", path.display())))?;
            }
        }
        Ok(())
    }

    /// The inline `machine_config` (`[experimental]` wins), as JSON.
    fn machine_config_overlay(&self) -> Result<Option<Value>, ConversionError> {
        let Some(src) = self
            .experimental
            .as_ref()
            .and_then(|e| e.machine_config.clone())
            .or_else(|| self.machine_config.clone())
            .filter(|s| !s.trim().is_empty())
        else {
            return Ok(None);
        };
        if !src.trim_start().starts_with('{') {
            return Err(err(format!(
                "machine_config {src} is a file, read where fly.toml is (hangar deploy does it); send its JSON instead"
            )));
        }
        serde_json::from_str(&src)
            .map(Some)
            .map_err(|e| err(format!("machine_config is not valid JSON: {e}")))
    }

    /// The throwaway machine that runs `[deploy] release_command` (§6.5): no services,
    /// checks or volumes, no restarts, destroyed when it exits.
    pub fn release_command_config(
        &self,
        image: &str,
    ) -> Result<Option<MachineConfig>, ConversionError> {
        let Some(cmd) = self
            .deploy
            .as_ref()
            .and_then(|d| d.release_command.clone())
            .filter(|c| !c.trim().is_empty())
        else {
            return Ok(None);
        };
        let argv = shlex::split(&cmd)
            .ok_or_else(|| err(format!("Can't shell split release command: '{cmd}'")))?;
        let mut mc = MachineConfig {
            image: image.to_string(),
            ..Default::default()
        };
        mc.init.cmd = Some(argv);
        mc.init.entrypoint = self
            .experimental
            .as_ref()
            .and_then(|e| e.entrypoint.clone());
        mc.init.swap_size_mb = self.swap_size_mb;
        let mut env = self.env.clone();
        env.insert("RELEASE_COMMAND".into(), "1".into());
        env.insert(
            "FLY_PROCESS_GROUP".into(),
            metadata::RELEASE_COMMAND_GROUP.into(),
        );
        if let Some(r) = self.primary_region.as_ref().filter(|r| !r.is_empty()) {
            env.insert("PRIMARY_REGION".into(), r.clone());
        }
        mc.env = Some(env);
        mc.metadata = Some(BTreeMap::from([
            (
                metadata::PROCESS_GROUP.to_string(),
                metadata::RELEASE_COMMAND_GROUP.to_string(),
            ),
            (metadata::PLATFORM_VERSION.to_string(), "v2".to_string()),
        ]));
        mc.restart = Some(MachineRestart {
            policy: Some("no".into()),
            max_retries: None,
        });
        mc.auto_destroy = Some(true);
        mc.stop_config = self.stop_config()?;
        mc.files = self.machine_files()?;
        mc.guest = Some(
            match self
                .deploy
                .as_ref()
                .and_then(|d| d.release_command_vm.as_ref())
            {
                Some(c) => compute::guest(c).map_err(err)?,
                None => compute::preset("shared-cpu-2x").map_err(err)?,
            },
        );
        Ok(Some(mc))
    }
}

/// The group's metrics endpoint (the first `[[metrics]]`), as the machine config has it.
fn machine_metrics(flat: &AppConfig) -> Option<Value> {
    flat.metrics.first().map(|m| {
        let mut v = json!({"port": m.port, "path": m.path});
        if let Some(h) = m.https {
            v["https"] = json!(h);
        }
        v
    })
}

/// The group's `[processes]` command, split like a shell would; none when it has none.
fn process_command(flat: &AppConfig, group: &str) -> Result<Option<Vec<String>>, ConversionError> {
    match flat.processes.get(group).filter(|c| !c.trim().is_empty()) {
        Some(cmd) => Ok(Some(shlex::split(cmd).ok_or_else(|| {
            err(format!(
                "could not parse command for {group} process group: unbalanced quotes in {cmd:?}"
            ))
        })?)),
        None => Ok(None),
    }
}

/// `[http_service]` first, then each `[[services]]`; none when there are none.
fn machine_services(flat: &AppConfig) -> Option<Vec<MachineService>> {
    let mut services = Vec::new();
    if let Some(h) = &flat.http_service {
        services.push(http_service(h));
    }
    for s in &flat.services {
        services.push(service(s));
    }
    (!services.is_empty()).then_some(services)
}

/// The top-level `[checks]`, each on its own port or the `[http_service]`'s; an error
/// names a check with neither.
fn machine_checks(
    flat: &AppConfig,
    group: &str,
) -> Result<Option<BTreeMap<String, MachineCheck>>, ConversionError> {
    let mut checks = BTreeMap::new();
    for (name, c) in &flat.checks {
        let port = match c.port {
            Some(p) => p,
            None => match &flat.http_service {
                Some(h) => h.internal_port,
                None => return Err(err(format!(
                    "Check '{name}' for process group '{group}' has no port set and the group has no http_service to take it from"
                ))),
            },
        };
        let as_service = ServiceCheck {
            interval: c.interval,
            timeout: c.timeout,
            grace_period: c.grace_period,
            method: c.method.as_ref().map(|m| m.to_ascii_uppercase()),
            path: c.path.clone(),
            protocol: c.protocol.clone(),
            tls_skip_verify: c.tls_skip_verify,
            tls_server_name: c.tls_server_name.clone(),
            headers: c.headers.clone(),
        };
        let mut mcheck = check(c.kind.as_deref().unwrap_or_default(), &as_service);
        mcheck.check_type = c.kind.clone();
        mcheck.port = Some(port);
        checks.insert(name.clone(), mcheck);
    }
    Ok((!checks.is_empty()).then_some(checks))
}

/// A `[[mounts]]` entry as the machine config has it: the volume, where it is mounted,
/// and its auto-extend settings (sizes that do not parse are left out).
/// A `[mounts]` entry as a machine mount: the volume is named by `source` and its id
/// filled in when the deployer finds or creates it; `size_gb` is the `initial_size` a
/// volume created for it gets.
fn machine_mount(m: &Mount) -> MachineMount {
    let gb = |v: Option<&str>| {
        v.map(compute::volume_gb)
            .and_then(Result::ok)
            .map(|gb| gb.min(u64::from(u32::MAX)) as u32)
    };
    MachineMount {
        volume: String::new(),
        path: m.destination.clone(),
        name: Some(m.source.clone()),
        size_gb: gb(m.initial_size.as_deref()),
        extend_threshold_percent: m
            .auto_extend_size_threshold
            .and_then(|t| u32::try_from(t).ok()),
        add_size_gb: gb(m.auto_extend_size_increment.as_deref()),
        size_gb_limit: gb(m.auto_extend_size_limit.as_deref()),
        ..Default::default()
    }
}

/// The restart policy of the group's last `[[restart]]`, in the machine config's words.
fn machine_restart(flat: &AppConfig) -> Result<Option<MachineRestart>, ConversionError> {
    let Some(r) = flat.restart.last() else {
        return Ok(None);
    };
    let policy = match r.policy.as_deref() {
        Some("always") => "always",
        Some("never") => "no",
        Some("on-failure") => "on-failure",
        other => {
            return Err(err(format!(
                "invalid restart policy: {}",
                other.unwrap_or_default()
            )))
        }
    };
    Ok(Some(MachineRestart {
        policy: Some(policy.into()),
        max_retries: r.retries,
    }))
}

fn overlay_json(mc: &mut MachineConfig, overlay: Value) -> Result<(), ConversionError> {
    let mut base = serde_json::to_value(&*mc).map_err(|e| err(e.to_string()))?;
    if let (Value::Object(b), Value::Object(o)) = (&mut base, overlay) {
        for (k, v) in o {
            b.insert(k, v);
        }
    }
    *mc = serde_json::from_value(base).map_err(|e| {
        err(format!(
            "machine_config does not describe a machine config: {e}"
        ))
    })?;
    Ok(())
}

fn headers(h: &BTreeMap<String, String>) -> Option<Value> {
    (!h.is_empty()).then(|| {
        Value::Array(
            h.iter()
                .map(|(k, v)| json!({"name": k, "values": [v]}))
                .collect(),
        )
    })
}

fn autostop(a: Option<AutoStop>) -> Option<Autostop> {
    a.map(|a| match a {
        AutoStop::Off => Autostop::Off,
        AutoStop::Stop => Autostop::Stop,
        AutoStop::Suspend => Autostop::Suspend,
    })
}

fn concurrency(c: &Option<Concurrency>) -> Option<ServiceConcurrency> {
    c.as_ref().map(|c| ServiceConcurrency {
        kind: c.kind.clone(),
        soft_limit: c.soft_limit,
        hard_limit: c.hard_limit,
    })
}

fn check(kind: &str, c: &ServiceCheck) -> MachineCheck {
    MachineCheck {
        check_type: Some(kind.into()),
        port: None,
        interval: c.interval,
        timeout: c.timeout,
        grace_period: c.grace_period,
        method: c.method.clone(),
        path: c.path.clone(),
        protocol: c.protocol.clone(),
        tls_skip_verify: c.tls_skip_verify,
        tls_server_name: c.tls_server_name.clone(),
        headers: headers(&c.headers),
        kind: None,
    }
}

fn http_service(h: &HttpService) -> MachineService {
    let checks: Vec<MachineCheck> = h.checks.iter().map(|c| check("http", c)).collect();
    MachineService {
        protocol: "tcp".into(),
        internal_port: h.internal_port,
        ports: Some(vec![
            MachinePort {
                port: Some(80),
                handlers: Some(vec!["http".into()]),
                force_https: h.force_https,
                http_options: h.http_options.clone(),
                ..Default::default()
            },
            MachinePort {
                port: Some(443),
                handlers: Some(vec!["http".into(), "tls".into()]),
                http_options: h.http_options.clone(),
                tls_options: h.tls_options.clone(),
                ..Default::default()
            },
        ]),
        autostart: h.auto_start_machines,
        autostop: autostop(h.auto_stop_machines),
        min_machines_running: h.min_machines_running,
        concurrency: concurrency(&h.concurrency),
        checks: (!checks.is_empty()).then_some(checks),
        ..Default::default()
    }
}

fn service(s: &Service) -> MachineService {
    let checks: Vec<MachineCheck> = s
        .tcp_checks
        .iter()
        .map(|c| check("tcp", c))
        .chain(s.http_checks.iter().map(|c| check("http", c)))
        .collect();
    MachineService {
        protocol: s.protocol.clone(),
        internal_port: s.internal_port,
        ports: Some(
            s.ports
                .iter()
                .map(|p| MachinePort {
                    port: p.port,
                    start_port: p.start_port,
                    end_port: p.end_port,
                    handlers: (!p.handlers.is_empty()).then(|| p.handlers.clone()),
                    force_https: p.force_https,
                    tls_options: p.tls_options.clone(),
                    http_options: p.http_options.clone(),
                    proxy_proto_options: p.proxy_proto_options.clone(),
                })
                .collect(),
        ),
        autostart: s.auto_start_machines,
        autostop: autostop(s.auto_stop_machines),
        min_machines_running: s.min_machines_running,
        concurrency: concurrency(&s.concurrency),
        checks: (!checks.is_empty()).then_some(checks),
        ..Default::default()
    }
}
