//! Reading `/proc`: whether a process is alive (and still the same process, not a
//! reused PID), its process group, and the figures `ps` reports.

use std::fs;

use hangar_types::ProcessStat;

/// The fields of `/proc/PID/stat` the driver uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub pgrp: i32,
    pub utime: u64,
    pub stime: u64,
    /// Start time in clock ticks since boot: with the PID it names one process.
    pub starttime: u64,
    pub rss_pages: u64,
}

pub fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field N is f[N - 3].
    Some(Stat {
        state: f.first()?.chars().next()?,
        pgrp: f.get(2)?.parse().ok()?,
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
        starttime: f.get(19)?.parse().ok()?,
        rss_pages: f.get(21)?.parse().ok()?,
    })
}

/// True when `pid` runs, is not a zombie, and started at `starttime`.
pub fn is_alive(pid: i32, starttime: u64) -> bool {
    matches!(stat(pid), Some(s) if s.starttime == starttime && s.state != 'Z' && s.state != 'X')
}

/// Every live process whose process group is `pgrp`.
pub fn processes_in_group(pgrp: i32) -> Vec<ProcessStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<ProcessStat> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| stat(*pid).is_some_and(|s| s.pgrp == pgrp))
        .filter_map(process)
        .collect();
    // The group leader (the main process) first, then the rest by PID.
    out.sort_by_key(|p| (p.pid != pgrp, p.pid));
    out
}

/// What `ps` shows of one live process.
pub fn process(pid: i32) -> Option<ProcessStat> {
    const PAGE: u64 = 4096;
    let st = stat(pid)?;
    if st.state == 'Z' {
        return None;
    }
    let command = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let directory = fs::read_link(format!("/proc/{pid}/cwd"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    Some(ProcessStat {
        pid,
        stime: st.starttime,
        rtime: st.utime + st.stime,
        command,
        directory,
        cpu: st.utime + st.stime,
        rss: st.rss_pages * PAGE,
        listen_sockets: Vec::new(),
    })
}
