//! `hangar doctor [-c fly.toml] [--json]`: the production checklist — each item PASS,
//! WARN or FAIL with a one-line fix. Reads the local fly.toml, and the app's machines
//! when the server can be reached.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use clap::Args;
use hangar_appconfig::{AppConfig, AutoStop};
use hangar_types::volume::Volume;
use serde::Serialize;

use super::appconfig::app_name;
use super::AppArg;
use crate::{config, output};

#[derive(Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub app: AppArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn pass(check: &'static str, detail: impl Into<String>) -> Finding {
    Finding {
        check,
        verdict: Verdict::Pass,
        detail: detail.into(),
        fix: None,
    }
}

fn flag(
    check: &'static str,
    verdict: Verdict,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        check,
        verdict,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// Bits of entropy per character of `s`.
fn entropy(s: &str) -> f64 {
    let mut counts: BTreeMap<char, usize> = BTreeMap::new();
    for c in s.chars() {
        *counts.entry(c).or_default() += 1;
    }
    let n = s.chars().count() as f64;
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether an `[env]` entry looks like a secret: by its name, or by a long random value.
pub fn looks_secret(key: &str, value: &str) -> Option<&'static str> {
    let k = key.to_ascii_uppercase();
    let named = [
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "TOKEN",
        "PRIVATE",
        "API_KEY",
        "ACCESS_KEY",
        "DATABASE_URL",
        "CREDENTIAL",
    ]
    .iter()
    .any(|w| k.contains(w));
    if named && !value.is_empty() {
        return Some("its name");
    }
    if value.len() >= 20 && !value.contains(' ') && entropy(value) >= 4.0 {
        return Some("its random-looking value");
    }
    None
}

/// Every service's view as the checklist needs it: (name, autostop, autostart,
/// min running, has concurrency limits, check grace periods).
struct ServiceView {
    name: String,
    autostop: Option<AutoStop>,
    autostart: Option<bool>,
    min_running: Option<u32>,
    limited: bool,
    checks: usize,
    graced: usize,
}

fn services(c: &AppConfig) -> Vec<ServiceView> {
    let mut out = Vec::new();
    if let Some(h) = &c.http_service {
        out.push(ServiceView {
            name: "[http_service]".into(),
            autostop: h.auto_stop_machines,
            autostart: h.auto_start_machines,
            min_running: h.min_machines_running,
            limited: h
                .concurrency
                .as_ref()
                .is_some_and(|c| c.soft_limit.is_some() || c.hard_limit.is_some()),
            checks: h.checks.len(),
            graced: h.checks.iter().filter(|c| c.grace_period.is_some()).count(),
        });
    }
    for (i, s) in c.services.iter().enumerate() {
        let checks: Vec<_> = s.tcp_checks.iter().chain(&s.http_checks).collect();
        out.push(ServiceView {
            name: format!("[[services]] #{} (port {})", i + 1, s.internal_port),
            autostop: s.auto_stop_machines,
            autostart: s.auto_start_machines,
            min_running: s.min_machines_running,
            limited: s
                .concurrency
                .as_ref()
                .is_some_and(|c| c.soft_limit.is_some() || c.hard_limit.is_some()),
            checks: checks.len(),
            graced: checks.iter().filter(|c| c.grace_period.is_some()).count(),
        });
    }
    out
}

/// The checklist over a config; `machines` is (count, regions) of the app's machines
/// when known.
pub fn examine(
    c: &AppConfig,
    machines: Option<(usize, BTreeSet<String>)>,
    volumes: Option<&[Volume]>,
    dockerfile: Option<&str>,
) -> Vec<Finding> {
    let svc = services(c);
    vec![
        https_forced(c),
        min_machines_running(&svc),
        redundancy(machines),
        health_checks(&svc),
        graceful_shutdown(c),
        secrets_in_env(c),
        volume_snapshots(c, volumes),
        volume_encryption(volumes),
        concurrency_limits(&svc),
        image_tags(c, dockerfile),
        auto_stop_start(&svc),
    ]
}

/// Whether plain HTTP redirects to HTTPS everywhere it is served.
fn https_forced(c: &AppConfig) -> Finding {
    let http_ports_forced = c.http_service.as_ref().map(|h| h.force_https == Some(true));
    let plain_unforced = c
        .services
        .iter()
        .flat_map(|s| &s.ports)
        .any(|p| p.handlers == ["http"] && p.force_https != Some(true));
    match http_ports_forced {
        Some(true) if !plain_unforced => pass("HTTPS forced", "plain HTTP redirects to HTTPS"),
        None if !plain_unforced => pass("HTTPS forced", "no plain HTTP port"),
        _ => flag(
            "HTTPS forced",
            Verdict::Fail,
            "plain HTTP is served without redirecting to HTTPS",
            "set force_https = true in [http_service] (or on each port 80)",
        ),
    }
}

fn min_machines_running(svc: &[ServiceView]) -> Finding {
    if svc.is_empty() {
        pass("min_machines_running", "no public services")
    } else if svc.iter().all(|s| s.min_running.unwrap_or(0) >= 1) {
        pass("min_machines_running", "at least one machine always runs")
    } else {
        flag(
            "min_machines_running",
            Verdict::Warn,
            "every machine may stop when idle, so the first request waits for a start",
            "set min_machines_running = 1 in [http_service]",
        )
    }
}

/// Whether one machine's failure takes the app down.
fn redundancy(machines: Option<(usize, BTreeSet<String>)>) -> Finding {
    match machines {
        None => flag(
            "redundancy",
            Verdict::Warn,
            "the app's machines could not be read",
            "deploy the app, then run `hangar doctor` again",
        ),
        Some((n, regions)) if n >= 2 || regions.len() >= 2 => pass(
            "redundancy",
            format!("{n} machines in {} region(s)", regions.len()),
        ),
        Some((n, _)) => flag(
            "redundancy",
            Verdict::Fail,
            format!("{n} machine(s): one failure takes the app down"),
            "run `hangar scale count 2` (or add a region with --region)",
        ),
    }
}

/// Whether every service has checks, each with a grace period.
fn health_checks(svc: &[ServiceView]) -> Finding {
    let ungraced: Vec<&str> = svc
        .iter()
        .filter(|s| s.checks == 0 || s.graced < s.checks)
        .map(|s| s.name.as_str())
        .collect();
    if ungraced.is_empty() {
        pass(
            "health checks",
            "every service has checks with grace periods",
        )
    } else {
        flag(
            "health checks",
            Verdict::Fail,
            format!("no check (or no grace_period) on {}", ungraced.join(", ")),
            "add [[http_service.checks]] with grace_period = \"10s\", interval and path",
        )
    }
}

/// Whether the kill signal and timeout let the app finish its requests.
fn graceful_shutdown(c: &AppConfig) -> Finding {
    let signal = c
        .kill_signal
        .clone()
        .unwrap_or_else(|| "SIGINT".into())
        .to_ascii_uppercase();
    let timeout = c.kill_timeout.map(|t| t.0.as_secs()).unwrap_or(5);
    if matches!(signal.as_str(), "SIGKILL" | "SIGSTOP") {
        flag(
            "graceful shutdown",
            Verdict::Fail,
            format!("kill_signal = {signal} gives the app no chance to finish requests"),
            "set kill_signal = \"SIGTERM\" (or SIGINT) and kill_timeout = \"30s\"",
        )
    } else if !(5..=300).contains(&timeout) {
        flag("graceful shutdown", Verdict::Warn, format!("kill_timeout is {timeout}s"), "set kill_timeout between \"5s\" and \"300s\", long enough to finish in-flight requests")
    } else if c.kill_signal.is_none() || c.kill_timeout.is_none() {
        flag("graceful shutdown", Verdict::Warn, format!("relying on defaults ({signal}, {timeout}s)"), "set kill_signal and kill_timeout to what your server handles, e.g. \"SIGTERM\" and \"30s\"")
    } else {
        pass(
            "graceful shutdown",
            format!("{signal}, then {timeout}s to finish"),
        )
    }
}

/// Whether `[env]` holds what looks like a secret.
fn secrets_in_env(c: &AppConfig) -> Finding {
    let leaked: Vec<String> = c
        .env
        .iter()
        .filter_map(|(k, v)| looks_secret(k, v).map(|why| format!("{k} (by {why})")))
        .collect();
    if leaked.is_empty() {
        pass("secrets in [env]", "nothing in [env] looks secret")
    } else {
        flag(
            "secrets in [env]",
            Verdict::Fail,
            format!(
                "[env] holds what looks like a secret: {}",
                leaked.join(", ")
            ),
            "move it out of fly.toml: `hangar secrets set NAME=...`",
        )
    }
}

/// Whether every volume keeps daily snapshots: judged from the app's real volumes when
/// the server answers (their retention and schedule as they are), else from fly.toml's
/// `[[mounts]]` (where an unset retention means the default, 5 days).
fn volume_snapshots(c: &AppConfig, volumes: Option<&[Volume]>) -> Finding {
    let Some(volumes) = volumes else {
        let off: Vec<&str> = c
            .mounts
            .iter()
            .filter(|m| m.scheduled_snapshots == Some(false) || m.snapshot_retention == Some(0))
            .map(|m| m.source.as_str())
            .collect();
        return if c.mounts.is_empty() {
            pass("volume snapshots", "no volumes")
        } else if off.is_empty() {
            pass(
                "volume snapshots",
                "every [[mounts]] volume is snapshotted daily",
            )
        } else {
            flag(
                "volume snapshots",
                Verdict::Warn,
                format!("scheduled snapshots are off for {}", off.join(", ")),
                "set scheduled_snapshots = true and snapshot_retention = 7 (days) in [[mounts]]",
            )
        };
    };
    let off: Vec<String> = volumes
        .iter()
        .filter(|v| !v.auto_backup_enabled)
        .map(|v| format!("{} ({})", v.id, v.name))
        .collect();
    if volumes.is_empty() {
        pass("volume snapshots", "no volumes")
    } else if off.is_empty() {
        let days: BTreeSet<u32> = volumes.iter().map(|v| v.snapshot_retention).collect();
        let days: Vec<String> = days.iter().map(u32::to_string).collect();
        pass(
            "volume snapshots",
            format!(
                "every volume is snapshotted daily, each snapshot kept {} days",
                days.join("/")
            ),
        )
    } else {
        flag(
            "volume snapshots",
            Verdict::Warn,
            format!("scheduled snapshots are off for {}", off.join(", ")),
            "`hangar volumes update ID --scheduled-snapshots=true --snapshot-retention 7`",
        )
    }
}

/// Whether the app's volumes are encrypted at rest (known only from the server).
fn volume_encryption(volumes: Option<&[Volume]>) -> Finding {
    let plain: Vec<&str> = volumes
        .unwrap_or_default()
        .iter()
        .filter(|v| !v.encrypted)
        .map(|v| v.id.as_str())
        .collect();
    if plain.is_empty() {
        pass("volume encryption", "no unencrypted volume")
    } else {
        flag(
            "volume encryption",
            Verdict::Warn,
            format!("not encrypted at rest: {}", plain.join(", ")),
            "make a new volume and copy the data over: volumes are encrypted by default where the host's kernel has AES in hardware, and everywhere ext4 can with `hangar server --volume-encryption always`; a restore or fork is as encrypted as its source",
        )
    }
}

fn concurrency_limits(svc: &[ServiceView]) -> Finding {
    let unlimited: Vec<&str> = svc
        .iter()
        .filter(|s| !s.limited)
        .map(|s| s.name.as_str())
        .collect();
    if unlimited.is_empty() {
        pass(
            "concurrency limits",
            "every service has soft and hard limits",
        )
    } else {
        flag(
            "concurrency limits",
            Verdict::Warn,
            format!("no concurrency limits on {}", unlimited.join(", ")),
            "add concurrency = { type = \"requests\", soft_limit = 200, hard_limit = 250 }",
        )
    }
}

/// Whether any image — `[build] image`, or a Dockerfile's `FROM` — is pinned to
/// `latest` (or to no tag at all).
fn image_tags(c: &AppConfig, dockerfile: Option<&str>) -> Finding {
    let mut latest = Vec::new();
    if let Some(img) = c.build.as_ref().and_then(|b| b.image.as_deref()) {
        let tag = img
            .rsplit('/')
            .next()
            .and_then(|last| last.split_once(':'))
            .map(|(_, t)| t);
        if !img.contains('@') && matches!(tag, None | Some("latest")) {
            latest.push(format!("[build] image {img}"));
        }
    }
    latest.extend(
        dockerfile
            .unwrap_or_default()
            .lines()
            .filter_map(unpinned_from)
            .map(|img| format!("Dockerfile FROM {img}")),
    );
    if latest.is_empty() {
        pass("image tags", "no image is pinned to latest")
    } else {
        flag(
            "image tags",
            Verdict::Warn,
            format!("{} may change under you", latest.join(", ")),
            "pin a version tag or a digest instead of latest",
        )
    }
}

/// The image of a Dockerfile `FROM` line when it may change under the build: no tag or
/// `latest`, no digest, and neither `scratch` nor a bare name (which may be an earlier
/// build stage).
fn unpinned_from(line: &str) -> Option<&str> {
    let mut w = line.split_whitespace();
    if !w.next().is_some_and(|k| k.eq_ignore_ascii_case("FROM")) {
        return None;
    }
    let img = w.find(|x| !x.starts_with("--"))?;
    let last = img.rsplit('/').next().unwrap_or(img);
    let unpinned = img != "scratch"
        && !img.contains('@')
        && (!last.contains(':') || last.ends_with(":latest"))
        && !img
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    unpinned.then_some(img)
}

/// Whether every service says what the proxy does when it is idle and when a request
/// comes.
fn auto_stop_start(svc: &[ServiceView]) -> Finding {
    let unset: Vec<&str> = svc
        .iter()
        .filter(|s| s.autostop.is_none() || s.autostart.is_none())
        .map(|s| s.name.as_str())
        .collect();
    if unset.is_empty() {
        pass("auto stop/start", "set on every service")
    } else {
        flag("auto stop/start", Verdict::Warn, format!("not set on {}", unset.join(", ")), "set auto_stop_machines = \"stop\" and auto_start_machines = true (or \"off\"/false on purpose)")
    }
}

pub async fn run(args: DoctorArgs) -> Result<()> {
    let loaded = args.app.config.load()?;
    let c = &loaded.config;
    let dockerfile = loaded
        .path
        .as_deref()
        .map(super::appconfig::dir_of)
        .map(|d| {
            d.join(
                c.build
                    .as_ref()
                    .and_then(|b| b.dockerfile.clone())
                    .unwrap_or_else(|| "Dockerfile".into()),
            )
        })
        .and_then(|p| std::fs::read_to_string(p).ok());
    let (machines, volumes) = match (app_name(&args.app, Some(c)), config::client()) {
        (Ok(app), Ok(client)) => (
            client.list_machines(&app, false).await.ok().map(|ms| {
                let ms = super::status::app_machines(ms);
                let regions = ms.iter().map(|m| m.region.clone()).collect();
                (ms.len(), regions)
            }),
            client.list_volumes(&app, false).await.ok(),
        ),
        _ => (None, None),
    };
    let findings = examine(c, machines, volumes.as_deref(), dockerfile.as_deref());
    let failed = findings
        .iter()
        .filter(|f| f.verdict == Verdict::Fail)
        .count();
    if args.json {
        output::json(&findings)?;
    } else {
        for f in &findings {
            let v = match f.verdict {
                Verdict::Pass => "PASS",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
            };
            println!("{v}  {}: {}", f.check, f.detail);
            if let Some(fix) = &f.fix {
                println!("      fix: {fix}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
