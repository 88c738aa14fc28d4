//! A real registry and test images: a Distribution registry (`docker-registry`) on a
//! free loopback port, and small OCI images built from `busybox-static`, pushed to it
//! over the registry's HTTP API.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

pub struct TestRegistry {
    _dir: tempfile::TempDir,
    child: Child,
    pub addr: String,
    /// Basic credentials the registry requires, if any.
    credentials: Option<(String, String)>,
}

fn digest(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Whether this host can run the containerd tests; CI installs all of it.
pub fn containerd_available() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root".into());
    }
    for bin in [
        "/usr/bin/containerd",
        "/usr/sbin/runc",
        "/usr/bin/docker-registry",
        "/bin/busybox",
        "/usr/bin/htpasswd",
        "/usr/sbin/ip",
        "/usr/sbin/iptables",
    ] {
        if !Path::new(bin).exists() && !Path::new(&bin.replace("/usr/sbin", "/usr/bin")).exists() {
            return Err(format!("{bin} is missing"));
        }
    }
    Ok(())
}

/// Whether this host can build images on the server too (buildah); CI installs it.
pub fn builds_available() -> Result<(), String> {
    containerd_available()?;
    if !Path::new("/usr/bin/buildah").exists() {
        return Err("/usr/bin/buildah is missing".into());
    }
    Ok(())
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        Self::launch(None)
    }

    /// A registry that requires `user`/`password` (htpasswd, from apache2-utils).
    pub fn start_with_auth(user: &str, password: &str) -> TestRegistry {
        Self::launch(Some((user.to_string(), password.to_string())))
    }

    fn launch(credentials: Option<(String, String)>) -> TestRegistry {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind a free loopback port")
            .local_addr()
            .expect("read the bound port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = &credentials {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils) installed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, out.stdout).expect("write the registry's htpasswd file");
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: hangar-test\n    path: {}\n",
                file.display()
            ));
        }
        std::fs::write(&config, text).expect("write the registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < until, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        TestRegistry {
            _dir: dir,
            child,
            addr,
            credentials,
        }
    }

    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let req = reqwest::Client::new().request(method, url);
        match &self.credentials {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        }
    }

    /// Builds the busybox test image and pushes it as `repo:tag`; returns the reference.
    pub async fn push_busybox(&self, repo: &str, tag: &str) -> String {
        self.push_image(repo, tag, 0).await
    }

    /// Like [`push_busybox`](Self::push_busybox), with `padding` bytes of incompressible
    /// data in `/padding` to make the image as large as wanted.
    pub async fn push_image(&self, repo: &str, tag: &str, padding: usize) -> String {
        let layer_tar = busybox_layer(padding);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&layer_tar).expect("gzip the image layer");
        let layer = gz.finish().expect("finish the gzipped layer");
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": {
                "Env": ["PATH=/bin", "IMAGE_VAR=from-image"],
                "Cmd": ["/bin/sh", "-c", "echo hello from image; exec sleep 3600"],
                "WorkingDir": "/"
            },
            "rootfs": {"type": "layers", "diff_ids": [digest(&layer_tar)]}
        }))
        .expect("encode the image config");
        for blob in [&layer, &config] {
            self.push_blob(repo, blob).await;
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&layer), "size": layer.len()}]
        }))
        .expect("encode the image manifest");
        self.put_manifest(
            repo,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        )
        .await;
        self.push_multi_arch(repo, tag, &manifest).await;
        format!("{}/{repo}:{tag}", self.addr)
    }

    /// Uploads one blob to `repo`, in a single request after starting the upload.
    async fn push_blob(&self, repo: &str, blob: &[u8]) {
        let res = self
            .request(
                reqwest::Method::POST,
                format!("http://{}/v2/{repo}/blobs/uploads/", self.addr),
            )
            .send()
            .await
            .expect("start a blob upload (is the registry up?)");
        let loc = res.headers()["location"]
            .to_str()
            .expect("upload location is text")
            .to_string();
        let loc = if loc.starts_with("http") {
            loc
        } else {
            format!("http://{}{loc}", self.addr)
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = self
            .request(
                reqwest::Method::PUT,
                format!("{loc}{sep}digest={}", digest(blob)),
            )
            .header("content-type", "application/octet-stream")
            .body(blob.to_vec())
            .send()
            .await
            .expect("upload a blob");
        assert!(put.status().is_success(), "push blob: {}", put.status());
    }

    /// A multi-arch index beside the image, as `{tag}-multi`: this host's platform and
    /// one it is not (`{tag}-s390x`, a manifest that differs only by an annotation, so
    /// the registry knows it).
    async fn push_multi_arch(&self, repo: &str, tag: &str, manifest: &[u8]) {
        let mut other: serde_json::Value =
            serde_json::from_slice(manifest).expect("read back the manifest");
        other["annotations"] = json!({"platform": "s390x"});
        let other = serde_json::to_vec(&other).expect("encode the other-platform manifest");
        self.put_manifest(
            repo,
            &format!("{tag}-s390x"),
            "application/vnd.oci.image.manifest.v1+json",
            &other,
        )
        .await;
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&other),
                 "size": other.len(), "platform": {"architecture": "s390x", "os": "linux"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(manifest),
                 "size": manifest.len(), "platform": {"architecture": "amd64", "os": "linux"}}
            ]
        }))
        .expect("encode the image index");
        self.put_manifest(
            repo,
            &format!("{tag}-multi"),
            "application/vnd.oci.image.index.v1+json",
            &index,
        )
        .await;
    }

    async fn put_manifest(&self, repo: &str, tag: &str, media_type: &str, body: &[u8]) {
        let put = self
            .request(
                reqwest::Method::PUT,
                format!("http://{}/v2/{repo}/manifests/{tag}", self.addr),
            )
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("push a manifest");
        assert!(
            put.status().is_success(),
            "push manifest {tag}: {}",
            put.status()
        );
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The probe: prints as JSON what the machine sees — its environment, hostname,
/// addresses, DNS and hosts files, and cgroup limits.
const PROBE: &str = r#"#!/bin/sh
esc() { sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/	/\\t/g' | awk '{printf "%s\\n", $0}'; }
first() { for f in "$@"; do [ -r "$f" ] && { cat "$f"; return; }; done; echo unknown; }
mem=$(first /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max)
cpu=$(first /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max)
printf '{"env":"%s","hostname":"%s","addresses":"%s","resolv_conf":"%s","hosts":"%s","memory_limit":"%s","cpu_quota":"%s"}\n' \
  "$(env | esc)" "$(hostname | esc)" "$(ip -o addr | esc)" "$(cat /etc/resolv.conf | esc)" \
  "$(cat /etc/hosts | esc)" "$(echo $mem | esc)" "$(echo $cpu | esc)"
"#;

/// A root filesystem with busybox and its applets as symlinks, and the probe.
fn busybox_layer(padding: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    if padding > 0 {
        // xorshift: cheap bytes gzip cannot shrink.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let data: Vec<u8> = (0..padding)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, "padding", &data[..])
            .expect("add padding to the layer");
    }
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "run"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, d, std::io::empty())
            .expect("add a directory to the layer");
    }
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(PROBE.len() as u64);
    b.append_data(&mut h, "bin/probe", PROBE.as_bytes())
        .expect("add the probe to the layer");
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static installed");
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    b.append_data(&mut h, "bin/busybox", &busybox[..])
        .expect("add busybox to the layer");
    for applet in [
        "sh", "sleep", "echo", "cat", "ls", "env", "id", "ps", "hostname", "true", "head", "kill",
        "dd", "mkdir", "httpd", "wget", "ip", "grep", "nc", "sed", "awk", "tr",
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .expect("add an applet link to the layer");
    }
    b.into_inner().expect("finish the layer tar")
}
