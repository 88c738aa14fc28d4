//! Secrets for containerd machines without writing them to disk: the static
//! `hangar-init` (built from `init/main.rs`) is installed once and bind-mounted into
//! every machine at `/.hangar/init`, with a file of its secrets from a tmpfs directory
//! at `/.hangar/secrets`; the init reads it, sets the environment and execs the
//! machine's command (and each command exec'd into the machine). The container spec containerd stores holds neither values
//! nor the file's contents, and the host copy is removed once the machine runs.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::DriverError;

/// Where the init and the secrets appear inside a machine.
pub const INIT_PATH: &str = "/.hangar/init";
pub const SECRETS_PATH: &str = "/.hangar/secrets";

const INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hangar-init"));

/// Writes the init under `dir` (once per content) and returns its path.
pub fn install(dir: &Path) -> Result<PathBuf, DriverError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| DriverError::io(format!("create {}", dir.display()), e))?;
    let path = dir.join("hangar-init");
    if std::fs::read(&path).ok().as_deref() != Some(INIT) {
        let tmp = dir.join("hangar-init.new");
        std::fs::write(&tmp, INIT).map_err(|e| DriverError::io("write hangar-init", e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| DriverError::io("chmod hangar-init", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| DriverError::io("install hangar-init", e))?;
    }
    Ok(path)
}

/// A memory-backed directory for secret files, private to this driver's root.
pub fn secrets_dir(root: &Path) -> PathBuf {
    let hash: String = Sha256::digest(root.as_os_str().as_encoded_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    PathBuf::from("/dev/shm").join(format!("hangar-{hash}"))
}

/// Writes a machine's secrets (`NAME NUL VALUE NUL ...`), readable only by the user the
/// machine runs as; returns the file.
pub fn write_secrets(
    dir: &Path,
    machine_id: &str,
    pairs: &[(String, String)],
    uid: u32,
    gid: u32,
) -> Result<PathBuf, DriverError> {
    std::fs::create_dir_all(dir).map_err(|e| DriverError::io("create the secrets directory", e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| DriverError::io("chmod the secrets directory", e))?;
    let path = dir.join(machine_id);
    let _ = std::fs::remove_file(&path);
    let mut data = Vec::new();
    for (k, v) in pairs {
        data.extend_from_slice(k.as_bytes());
        data.push(0);
        data.extend_from_slice(v.as_bytes());
        data.push(0);
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(&path)
        .map_err(|e| DriverError::io("create the machine's secrets file", e))?;
    std::io::Write::write_all(&mut f, &data)
        .map_err(|e| DriverError::io("write the machine's secrets file", e))?;
    nix::unistd::chown(&path, Some(uid.into()), Some(gid.into()))
        .map_err(|e| DriverError::io("chown the machine's secrets file", e.into()))?;
    Ok(path)
}

/// Removes the host copy; a running machine keeps its bind-mounted view.
pub fn remove_secrets(dir: &Path, machine_id: &str) {
    let _ = std::fs::remove_file(dir.join(machine_id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_passes_secrets_to_the_command() {
        let dir = tempfile::tempdir().expect("dir");
        let init = install(dir.path()).expect("installed");
        assert_eq!(install(dir.path()).expect("again"), init);
        // The init reads a fixed path inside a machine; outside one it runs the command
        // with the environment it was given.
        let out = std::process::Command::new(&init)
            .args(["/bin/sh", "-c", "echo $GREETING"])
            .env("GREETING", "hi")
            .output()
            .expect("runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi");
        let missing = std::process::Command::new(&init)
            .arg("/no/such/program")
            .output()
            .expect("runs");
        assert_eq!(missing.status.code(), Some(127));
    }
}
