//! The OCI runtime spec of a machine: the image's config merged with the machine's
//! `init` overrides as Fly merges them, the platform's environment, and `guest` limits
//! as cgroup limits.

use serde_json::{json, Value};

use super::image::ImageInfo;
use crate::LaunchSpec;

/// The argv to run: `init.exec` replaces everything; otherwise `init.entrypoint`
/// replaces the image's entrypoint and `init.cmd` its cmd (an entrypoint override
/// drops the image's cmd, as Docker does).
///
/// The first of `config.processes`, when given, overrides `init` the same way (Fly runs
/// one process per machine).
pub fn argv(spec: &LaunchSpec, image: &ImageInfo) -> Vec<String> {
    let init = &spec.config.init;
    let process = spec.config.processes.as_ref().and_then(|p| p.first());
    let exec = process
        .and_then(|p| p.exec.clone())
        .or_else(|| init.exec.clone());
    if let Some(exec) = exec.filter(|e| !e.is_empty()) {
        return exec;
    }
    let entrypoint_override = process
        .and_then(|p| p.entrypoint.clone())
        .or_else(|| init.entrypoint.clone());
    let cmd_override = process
        .and_then(|p| p.cmd.clone())
        .or_else(|| init.cmd.clone());
    let cmd = match (cmd_override, &entrypoint_override) {
        (Some(cmd), _) => cmd,
        (None, Some(_)) => Vec::new(),
        (None, None) => image.cmd.clone(),
    };
    let entrypoint = entrypoint_override.unwrap_or_else(|| image.entrypoint.clone());
    entrypoint.into_iter().chain(cmd).collect()
}

/// `KEY=VALUE` pairs: the image's, then the machine's `env`, then the platform's.
pub fn env(spec: &LaunchSpec, image: &ImageInfo) -> Vec<String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match pairs.iter_mut().find(|(key, _)| key == k) {
        Some(p) => p.1 = v.to_string(),
        None => pairs.push((k.to_string(), v.to_string())),
    };
    set(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    for kv in &image.env {
        if let Some((k, v)) = kv.split_once('=') {
            set(k, v);
        }
    }
    for (k, v) in &visible_env(spec) {
        set(k, v);
    }
    set("FLY_IMAGE_REF", &image.resolved);
    pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The machine's environment without the values that came from secrets (those reach
/// the machine through `hangar-init`; see [`super::init`]).
fn visible_env(spec: &LaunchSpec) -> std::collections::BTreeMap<String, String> {
    let (mut env, from_secrets) = spec.environment(Default::default());
    for k in from_secrets {
        env.remove(&k);
    }
    env
}

/// The variables that come from secrets, after precedence, for the secrets file.
pub fn secret_env(spec: &LaunchSpec) -> Vec<(String, String)> {
    let (env, from_secrets) = spec.environment(Default::default());
    from_secrets
        .into_iter()
        .filter_map(|k| env.get(&k).map(|v| (k.clone(), v.clone())))
        .collect()
}

/// `uid[:gid]` (the first process's `user`, else the image's) when numeric; names are
/// not looked up, they run as root.
pub fn user(spec: &LaunchSpec, image: &ImageInfo) -> (u32, u32) {
    let user = spec
        .config
        .processes
        .as_ref()
        .and_then(|p| p.first())
        .and_then(|p| p.user.clone())
        .unwrap_or_else(|| image.user.clone());
    let mut parts = user.split(':');
    let uid = parts.next().and_then(|u| u.parse().ok()).unwrap_or(0);
    let gid = parts.next().and_then(|g| g.parse().ok()).unwrap_or(uid);
    (uid, gid)
}

const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The OCI process of the main task or of an exec.
pub fn process(args: Vec<String>, env: Vec<String>, cwd: &str, uid: u32, gid: u32) -> Value {
    json!({
        "terminal": false,
        "user": {"uid": uid, "gid": gid},
        "args": args,
        "env": env,
        "cwd": if cwd.is_empty() { "/" } else { cwd },
        "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
        "noNewPrivileges": true
    })
}

/// `/etc/hosts` of a machine: its name on its 6PN address, as `.internal` DNS will give.
pub fn hosts_file(spec: &LaunchSpec) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{id} {id}.vm.{app}.internal\n",
        ip = spec.private_ip,
        id = spec.machine_id,
        app = spec.app_name
    )
}

/// `/etc/resolv.conf` of a machine: the platform resolver.
pub fn resolv_conf() -> String {
    format!(
        "nameserver {}\nsearch internal\noptions ndots:0\n",
        hangar_net::RESOLVER
    )
}

/// The machine's cgroup.
pub fn cgroup_path(machine_id: &str) -> String {
    format!("/hangar/{machine_id}")
}

/// Host files a machine with secrets gets: the init and its secrets file.
pub struct InitMounts<'a> {
    pub init: &'a std::path::Path,
    pub secrets: &'a std::path::Path,
}

/// The whole runtime spec.
pub fn runtime_spec(
    spec: &LaunchSpec,
    image: &ImageInfo,
    netns: &std::path::Path,
    init: Option<InitMounts<'_>>,
) -> Value {
    let (uid, gid) = user(spec, image);
    let mut args = argv(spec, image);
    let mut extra_mounts = Vec::new();
    if let Some(i) = &init {
        args.insert(0, super::init::INIT_PATH.to_string());
        extra_mounts.push(
            json!({"destination": super::init::INIT_PATH, "type": "bind",
            "source": i.init, "options": ["rbind", "ro", "nosuid", "nodev"]}),
        );
        extra_mounts.push(
            json!({"destination": super::init::SECRETS_PATH, "type": "bind",
            "source": i.secrets, "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}),
        );
    }
    // A raw volume is a device node at its path (and a rule letting the machine use
    // that one device); any other is its filesystem bound there.
    let mut devices = Vec::new();
    let mut device_rules = vec![json!({"allow": false, "access": "rwm"})];
    for v in &spec.volumes {
        match v.block_device {
            Some(d) => {
                devices.push(json!({"path": v.path, "type": "b", "major": d.major,
                    "minor": d.minor, "fileMode": 0o660, "uid": 0, "gid": 0}));
                device_rules.push(json!({"allow": true, "type": "b", "major": d.major,
                    "minor": d.minor, "access": "rwm"}));
            }
            None => extra_mounts.push(
                json!({"destination": v.path, "type": "bind", "source": v.source,
                "options": ["rbind", "rw", "nosuid", "nodev"]}),
            ),
        }
    }
    let guest = spec.config.guest.clone().unwrap_or_default();
    let memory = u64::from(guest.memory_mb.unwrap_or(256)) << 20;
    let cpus = u64::from(guest.cpus.unwrap_or(1));
    let mut doc = json!({
        "ociVersion": "1.0.2",
        "process": process(args, env(spec, image), &image.working_dir, uid, gid),
        "root": {"path": "rootfs", "readonly": false},
        "hostname": spec.machine_id,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                           {"type": "network", "path": netns}],
            "resources": {
                "devices": device_rules,
                "memory": {"limit": memory, "swap": memory},
                "cpu": {"quota": (cpus * 100_000) as i64, "period": 100_000u64}
            },
            "devices": devices,
            "cgroupsPath": cgroup_path(&spec.machine_id),
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    if let Some(mounts) = doc["mounts"].as_array_mut() {
        mounts.extend(extra_mounts);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_types::MachineConfig;

    fn image() -> ImageInfo {
        ImageInfo {
            resolved: "r/app@sha256:x".into(),
            chain_id: "c".into(),
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            env: vec!["A=image".into(), "B=image".into()],
            working_dir: "/app".into(),
            user: "1000:1000".into(),
        }
    }

    fn launch(init: serde_json::Value, env: serde_json::Value) -> LaunchSpec {
        let config: MachineConfig =
            serde_json::from_value(json!({"image": "x", "init": init, "env": env})).unwrap();
        LaunchSpec {
            machine_id: "m".into(),
            app_name: "app".into(),
            private_ip: "fdaa:0:1:a7b:1:2:3:2".into(),
            config,
            platform_env: [("FLY_APP_NAME".to_string(), "app".to_string())].into(),
            secrets: Default::default(),
            volumes: Vec::new(),
        }
    }

    #[test]
    fn a_raw_volume_is_one_allowed_device_and_a_filesystem_is_a_bind() {
        let mut spec = launch(json!({}), json!({}));
        spec.volumes = vec![
            crate::VolumeMount {
                source: "/dev/loop7".into(),
                path: "/dev/blocks".into(),
                block_device: Some(crate::BlockDevice { major: 7, minor: 7 }),
            },
            crate::VolumeMount {
                source: "/var/lib/v/fs".into(),
                path: "/data".into(),
                block_device: None,
            },
        ];
        let doc = runtime_spec(&spec, &image(), std::path::Path::new("/n"), None);
        let devices = doc["linux"]["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0]["path"], "/dev/blocks");
        assert_eq!(devices[0]["type"], "b");
        let rules = doc["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules[0]["allow"], false, "everything else stays denied");
        assert_eq!(
            rules[1],
            json!({"allow": true, "type": "b", "major": 7, "minor": 7, "access": "rwm"})
        );
        let mounts = doc["mounts"].as_array().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m["destination"] == "/data" && m["type"] == "bind"));
        assert!(!mounts.iter().any(|m| m["destination"] == "/dev/blocks"));
    }

    #[test]
    fn init_overrides_merge_like_fly() {
        let i = image();
        assert_eq!(argv(&launch(json!({}), json!({})), &i), ["/entry", "serve"]);
        assert_eq!(
            argv(&launch(json!({"cmd": ["run"]}), json!({})), &i),
            ["/entry", "run"]
        );
        assert_eq!(
            argv(&launch(json!({"entrypoint": ["/other"]}), json!({})), &i),
            ["/other"]
        );
        assert_eq!(
            argv(
                &launch(json!({"exec": ["/bin/sh"], "cmd": ["x"]}), json!({})),
                &i
            ),
            ["/bin/sh"]
        );
        let mut with_process = launch(json!({"cmd": ["ignored"]}), json!({}));
        with_process.config.processes = serde_json::from_value(
            json!([{"cmd": ["worker"], "env": {"ROLE": "worker"}, "user": "7"}]),
        )
        .unwrap();
        assert_eq!(argv(&with_process, &i), ["/entry", "worker"]);
        assert!(env(&with_process, &i).contains(&"ROLE=worker".to_string()));
        let spec = runtime_spec(&with_process, &i, std::path::Path::new("/n"), None);
        assert_eq!(spec["process"]["user"]["uid"], 7);
        let mut with_secret = launch(json!({}), json!({"TOKEN": "plain", "KEEP": "yes"}));
        with_secret
            .secrets
            .0
            .insert("TOKEN".into(), "s3cret".into());
        let s = runtime_spec(
            &with_secret,
            &i,
            std::path::Path::new("/n"),
            Some(InitMounts {
                init: std::path::Path::new("/h/init"),
                secrets: std::path::Path::new("/h/secrets"),
            }),
        );
        assert!(
            !s.to_string().contains("s3cret"),
            "no secret value in the spec"
        );
        assert!(
            !s.to_string().contains("TOKEN=plain"),
            "a secret's name is taken by it"
        );
        assert_eq!(s["process"]["args"][0], "/.hangar/init");
        assert_eq!(s["process"]["args"][1], "/entry");
        assert_eq!(
            secret_env(&with_secret),
            vec![("TOKEN".to_string(), "s3cret".to_string())]
        );
        let e = env(&launch(json!({}), json!({"B": "machine"})), &i);
        assert!(e.contains(&"A=image".to_string()) && e.contains(&"B=machine".to_string()));
        assert!(e.contains(&"FLY_IMAGE_REF=r/app@sha256:x".to_string()));
        let s = runtime_spec(
            &launch(json!({}), json!({})),
            &i,
            std::path::Path::new("/run/netns/x"),
            None,
        );
        assert_eq!(s["linux"]["namespaces"][4]["path"], "/run/netns/x");
        assert_eq!(s["process"]["user"]["uid"], 1000);
        assert_eq!(s["process"]["cwd"], "/app");
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 256u64 << 20);
    }
}
