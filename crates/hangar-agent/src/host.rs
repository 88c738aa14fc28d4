//! What this host offers machines: its CPUs and memory, measured from the kernel, as
//! the agent reports them to the control plane with its region. Placement (in the
//! control plane) counts machines' reservations against them; the agent itself does
//! not refuse work here.

use serde::{Deserialize, Serialize};

/// A host's size, as placement sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCapacity {
    pub cpus: u32,
    pub memory_mb: u64,
}

impl HostCapacity {
    /// This host's online CPUs and total memory. A host that cannot say (no
    /// `/proc/meminfo`) counts as one CPU and 1 GiB, so placement stays cautious.
    pub fn measure() -> HostCapacity {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let memory_mb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| mem_total_mb(&m))
            .unwrap_or(1024);
        HostCapacity { cpus, memory_mb }
    }
}

/// This host's id: made once and kept in `<data_dir>/host-id`, so a host is the same
/// host to placement (and its volumes stay its own) across restarts, whether its agent
/// runs in the server's process or in its own.
pub fn host_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("host-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = crate::ids::ulid().to_ascii_lowercase();
            std::fs::create_dir_all(data_dir)?;
            std::fs::write(&path, format!("{id}\n"))?;
            Ok(id)
        }
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in MB.
fn mem_total_mb(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let kb: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(kb / 1024),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_total_memory() {
        let text = "MemTotal:       24592380 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total_mb(text), Some(24015));
        assert_eq!(mem_total_mb("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_mb("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn a_host_keeps_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let id = host_id(dir.path()).unwrap();
        assert_eq!(host_id(dir.path()).unwrap(), id);
        assert_eq!(id.len(), 26);
    }

    #[test]
    fn measures_this_host() {
        let c = HostCapacity::measure();
        assert!(c.cpus >= 1 && c.memory_mb >= 64, "{c:?}");
    }
}
