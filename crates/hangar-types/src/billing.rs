//! Usage and what it costs: the price table (Fly's published list prices by default;
//! an operator may give another), a machine's billed size from its guest, the unit
//! price of each kind of usage, and the report `GET /v1/orgs/{org}/billing` answers.
//! Pure data and arithmetic; metering is the server's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::machine_config::MachineGuest;

/// Fly prices by periods of 30 days.
pub const SECONDS_PER_30_DAYS: f64 = 30.0 * 86_400.0;
/// Egress is priced per decimal gigabyte.
pub const BYTES_PER_GB: f64 = 1e9;

/// What usage costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    #[serde(default = "usd")]
    pub currency: String,
    /// A started machine of each preset, with the preset's memory, per 30 days.
    pub machines: BTreeMap<String, f64>,
    /// Memory above a preset's, per GB per 30 days.
    pub extra_memory_gb_30d: f64,
    /// Stopped and suspended machines' root filesystems, per GB per 30 days (shown;
    /// root filesystem sizes are not metered yet).
    pub stopped_rootfs_gb_30d: f64,
    /// Provisioned volume capacity, per GB per 30 days.
    pub volume_gb_30d: f64,
    /// A dedicated IPv4 address, per 30 days (shared IPv4 and IPv6 are free).
    pub dedicated_ipv4_30d: f64,
    /// Data out to the internet through the proxy, per GB.
    pub egress_gb: f64,
}

fn usd() -> String {
    "USD".into()
}

impl Default for PriceTable {
    /// Fly's published list prices (the cheapest regions).
    fn default() -> Self {
        let machines = [
            ("shared-cpu-1x", 1.94),
            ("shared-cpu-2x", 3.89),
            ("shared-cpu-4x", 7.78),
            ("shared-cpu-8x", 15.55),
            ("performance-1x", 31.0),
            ("performance-2x", 62.0),
            ("performance-4x", 124.0),
            ("performance-8x", 248.0),
            ("performance-16x", 496.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        PriceTable {
            currency: usd(),
            machines,
            extra_memory_gb_30d: 5.0,
            stopped_rootfs_gb_30d: 0.15,
            volume_gb_30d: 0.15,
            dedicated_ipv4_30d: 2.0,
            egress_gb: 0.02,
        }
    }
}

/// The memory a preset comes with: 256 MB per shared CPU, 2 GB per performance CPU.
pub fn preset_memory_mb(preset: &str) -> Option<u32> {
    let count = |prefix: &str| {
        preset
            .strip_prefix(prefix)
            .and_then(|n| n.strip_suffix('x'))
            .and_then(|n| n.parse::<u32>().ok())
    };
    count("shared-cpu-")
        .map(|n| n * 256)
        .or_else(|| count("performance-").map(|n| n * 2048))
}

/// The preset a guest is billed as, and its memory (Fly's default: shared-cpu-1x, 256 MB).
pub fn billed_size(guest: Option<&MachineGuest>) -> (String, u32) {
    let kind = guest
        .and_then(|g| g.cpu_kind.as_deref())
        .unwrap_or("shared");
    let cpus = guest.and_then(|g| g.cpus).unwrap_or(1).max(1);
    let preset = if kind == "performance" {
        format!("performance-{cpus}x")
    } else {
        format!("shared-cpu-{cpus}x")
    };
    let memory = guest
        .and_then(|g| g.memory_mb)
        .or_else(|| preset_memory_mb(&preset))
        .unwrap_or(256);
    (preset, memory)
}

/// What is metered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageItem {
    Machine,
    Volume,
    Ipv4,
    Egress,
}

impl UsageItem {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageItem::Machine => "machine",
            UsageItem::Volume => "volume",
            UsageItem::Ipv4 => "ipv4",
            UsageItem::Egress => "egress",
        }
    }

    pub fn parse(s: &str) -> Option<UsageItem> {
        [
            UsageItem::Machine,
            UsageItem::Volume,
            UsageItem::Ipv4,
            UsageItem::Egress,
        ]
        .into_iter()
        .find(|i| i.as_str() == s)
    }

    /// The unit its quantity is counted in.
    pub fn unit(self) -> &'static str {
        match self {
            UsageItem::Machine | UsageItem::Ipv4 => "seconds",
            UsageItem::Volume => "gb-seconds",
            UsageItem::Egress => "bytes",
        }
    }
}

impl PriceTable {
    /// A started machine of `preset` with `memory_mb`, per second; `None` for a preset
    /// the table does not price.
    pub fn machine_per_second(&self, preset: &str, memory_mb: u32) -> Option<f64> {
        let base = *self.machines.get(preset)?;
        let included = preset_memory_mb(preset).unwrap_or(memory_mb);
        let extra_gb = f64::from(memory_mb.saturating_sub(included)) / 1024.0;
        Some((base + extra_gb * self.extra_memory_gb_30d) / SECONDS_PER_30_DAYS)
    }

    /// The price of one unit of `item` (see [`UsageItem::unit`]). A suspended machine
    /// is billed only for its root filesystem, which is not metered: 0 here.
    pub fn unit_price(
        &self,
        item: UsageItem,
        preset: &str,
        memory_mb: u32,
        state: &str,
    ) -> Option<f64> {
        match item {
            UsageItem::Machine if state == "running" => self.machine_per_second(preset, memory_mb),
            UsageItem::Machine => Some(0.0),
            UsageItem::Volume => Some(self.volume_gb_30d / SECONDS_PER_30_DAYS),
            UsageItem::Ipv4 => Some(self.dedicated_ipv4_30d / SECONDS_PER_30_DAYS),
            UsageItem::Egress => Some(self.egress_gb / BYTES_PER_GB),
        }
    }

    /// Checks an operator's table: every price finite and not negative.
    pub fn validate(&self) -> Result<(), String> {
        let named = [
            ("extra_memory_gb_30d", self.extra_memory_gb_30d),
            ("stopped_rootfs_gb_30d", self.stopped_rootfs_gb_30d),
            ("volume_gb_30d", self.volume_gb_30d),
            ("dedicated_ipv4_30d", self.dedicated_ipv4_30d),
            ("egress_gb", self.egress_gb),
        ];
        let machines = self
            .machines
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<Vec<_>>();
        for (name, v) in named.into_iter().chain(machines) {
            if !v.is_finite() || v < 0.0 {
                return Err(format!(
                    "price {name} must be a number of 0 or more, got {v}"
                ));
            }
        }
        if self.machines.is_empty() {
            return Err("the price table prices no machine preset: add [machines]".into());
        }
        Ok(())
    }
}

/// One line of a usage report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageLine {
    pub app: String,
    /// `machine`, `volume`, `ipv4` or `egress`.
    pub item: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    /// A machine's `running` or `suspended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    pub quantity: f64,
    pub unit: String,
    pub unit_price: f64,
    pub cost: f64,
}

/// `GET /v1/orgs/{org}/billing?month=YYYY-MM[&app=APP]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BillingReport {
    pub org: String,
    pub month: String,
    pub currency: String,
    /// Usage is counted up to this moment (RFC 3339).
    pub through: String,
    pub lines: Vec<UsageLine>,
    pub total: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_prices() {
        assert_eq!(billed_size(None), ("shared-cpu-1x".into(), 256));
        let g = MachineGuest {
            cpu_kind: Some("performance".into()),
            cpus: Some(2),
            ..Default::default()
        };
        assert_eq!(billed_size(Some(&g)), ("performance-2x".into(), 4096));
        let t = PriceTable::default();
        let base = t.machine_per_second("shared-cpu-1x", 256).expect("priced");
        assert!((base * SECONDS_PER_30_DAYS - 1.94).abs() < 1e-9);
        // 1 GB on a shared-cpu-1x: 768 MB over the preset, at $5 per GB.
        let big = t.machine_per_second("shared-cpu-1x", 1024).expect("priced");
        assert!((big * SECONDS_PER_30_DAYS - (1.94 + 0.75 * 5.0)).abs() < 1e-9);
        assert_eq!(t.machine_per_second("gpu-a100", 1024), None);
        assert_eq!(
            t.unit_price(UsageItem::Machine, "shared-cpu-1x", 256, "suspended"),
            Some(0.0)
        );
        assert!(t.validate().is_ok());
        let mut bad = t.clone();
        bad.egress_gb = -1.0;
        assert!(bad.validate().unwrap_err().contains("egress_gb"));
    }
}
