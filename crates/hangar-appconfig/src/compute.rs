//! Machine sizes: the named presets (`shared-cpu-1x`, `performance-2x`, ...), memory and
//! volume sizes written with or without units, and the guest a `[[vm]]` section gives.

use hangar_types::machine_config::MachineGuest;

use crate::model::Compute;

/// Every preset name, in the order errors list them.
pub fn preset_names() -> Vec<String> {
    let mut names: Vec<String> = [1, 2, 4, 6, 8]
        .iter()
        .map(|n| format!("shared-cpu-{n}x"))
        .collect();
    names.extend(
        [1, 2, 4, 6, 8, 10, 12, 14, 16]
            .iter()
            .map(|n| format!("performance-{n}x")),
    );
    names.extend(["a100-40gb", "a100-80gb", "l40s", "a10"].map(String::from));
    names
}

/// The guest of a preset, or an error that lists the valid ones.
pub fn preset(name: &str) -> Result<MachineGuest, String> {
    let guest = |kind: &str, cpus: u32, memory_mb: u32| MachineGuest {
        cpu_kind: Some(kind.into()),
        cpus: Some(cpus),
        memory_mb: Some(memory_mb),
        ..Default::default()
    };
    let n = |prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix('x'))
            .and_then(|n| n.parse::<u32>().ok())
    };
    if let Some(c) = n("shared-cpu-").filter(|c| [1, 2, 4, 6, 8].contains(c)) {
        return Ok(guest("shared", c, c * 256));
    }
    if let Some(c) = n("performance-").filter(|c| [1, 2, 4, 6, 8, 10, 12, 14, 16].contains(c)) {
        return Ok(guest("performance", c, c * 2048));
    }
    if ["a100-40gb", "a100-80gb", "l40s", "a10"].contains(&name) {
        let mut g = guest("performance", 8, 32768);
        g.gpus = Some(1);
        g.gpu_kind = Some(name.to_string());
        return Ok(g);
    }
    Err(format!(
        "'{name}' is an invalid machine size, choose one of: {}",
        preset_names().join(", ")
    ))
}

/// Splits `"512"`, `"1gb"`, `"8G"`, `"1.5 GiB"` into a number and a lower-cased unit.
fn split_size(text: &str) -> Result<(f64, String), String> {
    let t = text.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let number: f64 = t[..end].parse().map_err(|_| {
        format!(
            "invalid size {text:?}: expected a number with an optional unit, e.g. \"512\", \"1gb\""
        )
    })?;
    Ok((number, t[end..].trim().to_ascii_lowercase()))
}

/// Memory in MiB: a bare number is MB; units are binary (`1gb` = 1024).
pub fn memory_mb(text: &str) -> Result<u32, String> {
    let (n, unit) = split_size(text)?;
    let mult: f64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" if unit.is_empty() => return Ok(n as u32),
        "" => 1.0 / (1024.0 * 1024.0),
        "k" => 1.0 / 1024.0,
        "m" => 1.0,
        "g" => 1024.0,
        "t" => 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "invalid memory size {text:?}: use MB as a number (512) or a unit such as \"1gb\""
            ))
        }
    };
    Ok((n * mult) as u32)
}

/// A volume size in GB: a bare number is GB; units are decimal (`30gb` = 30).
pub fn volume_gb(text: &str) -> Result<u64, String> {
    let (n, unit) = split_size(text)?;
    let mult: f64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" if unit.is_empty() => return Ok(n as u64),
        "" => 1e-9,
        "k" => 1e-6,
        "m" => 1e-3,
        "g" => 1.0,
        "t" => 1e3,
        _ => {
            return Err(format!(
                "invalid volume size {text:?}: use GB as a number (10) or a unit such as \"10gb\""
            ))
        }
    };
    Ok((n * mult) as u64)
}

/// The guest a `[[vm]]` section gives: its preset (or the default), then `memory`, then
/// every guest field it sets.
pub fn guest(c: &Compute) -> Result<MachineGuest, String> {
    let base = match (&c.size, &c.gpu_kind) {
        (Some(size), _) => size.clone(),
        (None, Some(_)) => "performance-8x".into(),
        (None, None) => "shared-cpu-1x".into(),
    };
    let mut g = preset(&base)?;
    if let Some(m) = &c.memory {
        let mb = memory_mb(m)?;
        if mb == 0 {
            return Err("memory cannot be zero".into());
        }
        g.memory_mb = Some(mb);
    }
    if let Some(v) = c.cpus.filter(|v| *v > 0) {
        g.cpus = Some(v);
    }
    if let Some(v) = c.cpu_kind.clone().filter(|v| !v.is_empty()) {
        g.cpu_kind = Some(v);
    }
    if let Some(v) = c.memory_mb.filter(|v| *v > 0) {
        g.memory_mb = Some(v);
    }
    if let Some(v) = c.max_memory_mb.filter(|v| *v > 0) {
        g.max_memory_mb = Some(v);
    }
    if let Some(v) = c.gpus.filter(|v| *v > 0) {
        g.gpus = Some(v);
    }
    if let Some(v) = c.gpu_kind.clone().filter(|v| !v.is_empty()) {
        g.gpu_kind = Some(v);
        g.gpus = g.gpus.or(Some(1));
    }
    if let Some(v) = c.host_dedication_id.clone().filter(|v| !v.is_empty()) {
        g.host_dedication_id = Some(v);
    }
    if let Some(v) = c.kernel_args.clone().filter(|v| !v.is_empty()) {
        g.kernel_args = Some(v);
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_flyctl_units() {
        assert_eq!(memory_mb("512"), Ok(512));
        assert_eq!(memory_mb("1gb"), Ok(1024));
        assert_eq!(memory_mb("8g"), Ok(8192));
        assert_eq!(memory_mb("4G"), Ok(4096));
        assert_eq!(volume_gb("30gb"), Ok(30));
        assert_eq!(volume_gb("15Mb"), Ok(0));
        assert_eq!(volume_gb("200"), Ok(200));
        assert!(volume_gb("unparseable").is_err());
    }

    #[test]
    fn presets_and_overrides() {
        let g = guest(&Compute {
            size: Some("shared-cpu-2x".into()),
            memory: Some("1gb".into()),
            ..Default::default()
        })
        .expect("guest");
        assert_eq!((g.cpus, g.memory_mb), (Some(2), Some(1024)));
        let g = guest(&Compute {
            gpu_kind: Some("a100-40gb".into()),
            memory: Some("64gb".into()),
            ..Default::default()
        })
        .expect("guest");
        assert_eq!(g.cpu_kind.as_deref(), Some("performance"));
        assert_eq!((g.cpus, g.memory_mb), (Some(8), Some(65536)));
        let e = preset("huge").expect_err("unknown");
        assert!(e.contains("is an invalid machine size") && e.contains("shared-cpu-1x"));
        let e = guest(&Compute {
            memory: Some("0".into()),
            ..Default::default()
        })
        .expect_err("zero");
        assert_eq!(e, "memory cannot be zero");
    }
}
