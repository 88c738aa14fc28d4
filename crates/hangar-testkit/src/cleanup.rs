//! Ending what a test or benchmark server left running.

use std::path::Path;
use std::process::{Command, Stdio};

/// Ends what a `hangar server` whose data dir is `root` left running: containerd tasks
/// (Hangar's and the benchmark's `ctr run` peers), machine network namespaces, the
/// private containerd, machine processes, and mounts. Machines outlive the server by
/// design, so tests and benchmarks must do this themselves.
pub fn cleanup(root: &Path) {
    let socket = root.join("containerd").join("containerd.sock");
    if socket.exists() {
        let ctr = |args: &[&str]| {
            Command::new("ctr")
                .arg("-a")
                .arg(&socket)
                .args(args)
                .stderr(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        for ns in ["hangar", "bench"] {
            for id in ctr(&["-n", ns, "tasks", "ls", "-q"]).lines() {
                ctr(&["-n", ns, "tasks", "kill", "-a", "-s", "SIGKILL", id]);
                ctr(&["-n", ns, "tasks", "delete", "-f", id]);
            }
        }
    }
    if let Ok(dirs) = std::fs::read_dir(root.join("containerd").join("machines")) {
        for d in dirs.flatten() {
            let ns = format!("hangar-{}", d.file_name().to_string_lossy());
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
    let root_str = root.display().to_string();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let in_root =
                |l: &str| std::fs::read_link(e.path().join(l)).is_ok_and(|p| p.starts_with(root));
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if in_root("cwd")
                || in_root("root")
                || String::from_utf8_lossy(&cmdline).contains(&root_str)
            {
                let _ = Command::new("kill")
                    .args(["-9", &e.file_name().to_string_lossy()])
                    .status();
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut targets: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|t| t.starts_with(&root_str))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        let _ = Command::new("umount").args(["-l", t]).status();
    }
    // Volumes' mount points are immutable while unmounted (nothing lands beside the
    // filesystem); let them go so the tree can be removed.
    for volumes in [root.join("volumes"), root.join("data").join("volumes")] {
        for v in std::fs::read_dir(&volumes).into_iter().flatten().flatten() {
            let _ = Command::new("chattr")
                .arg("-i")
                .arg(v.path().join("fs"))
                .status();
        }
    }
    // Loop devices of volumes whose images are under the root.
    let loops = Command::new("losetup")
        .args(["-n", "-O", "NAME,BACK-FILE"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for line in loops.lines() {
        let mut words = line.split_whitespace();
        if let (Some(device), Some(file)) = (words.next(), words.next()) {
            if file.starts_with(&root_str) {
                let _ = Command::new("losetup").args(["-d", device]).status();
            }
        }
    }
}
