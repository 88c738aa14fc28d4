//! `config.files`: files written into a machine's root filesystem before it starts
//! (`guest_path`, `raw_value` in base64, `mode`). Both drivers use this; they differ
//! only in where the root filesystem is.

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use hangar_types::machine_config::MachineFile;

use crate::{DriverError, Secrets};

/// Checks every file can be written, without writing: a message naming the file if not.
pub fn check(files: &[MachineFile]) -> Result<(), String> {
    for f in files {
        relative(&f.guest_path)?;
        content(f, None)?;
    }
    Ok(())
}

/// `guest_path` inside the root filesystem, refusing `..`.
fn relative(guest_path: &str) -> Result<PathBuf, String> {
    let p = Path::new(guest_path);
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!(
            "config.files: guest_path {guest_path:?} must be an absolute path without \"..\""
        ));
    }
    Ok(p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect())
}

/// What a file holds; a `secret_name` file needs `secrets` (None when only checking).
fn content(f: &MachineFile, secrets: Option<&Secrets>) -> Result<Vec<u8>, String> {
    match (&f.raw_value, &f.secret_name, &f.image_config) {
        (Some(raw), None, None) => base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map_err(|e| {
                format!(
                    "config.files {:?}: raw_value is not valid base64: {e}",
                    f.guest_path
                )
            }),
        (None, Some(name), None) => {
            let Some(secrets) = secrets else {
                return Ok(Vec::new());
            };
            let value = secrets.0.get(name).ok_or_else(|| {
                format!(
                    "config.files {:?}: secret {name} is not set; set it with `hangar secrets set {name}=...` (base64 of the file's content)",
                    f.guest_path
                )
            })?;
            base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .map_err(|_| {
                    format!(
                        "config.files {:?}: secret {name} must hold the file's content in base64",
                        f.guest_path
                    )
                })
        }
        (None, None, Some(_)) => Err(format!(
            "config.files {:?}: image_config is not supported; use raw_value",
            f.guest_path
        )),
        _ => Err(format!(
            "config.files {:?}: give exactly one of raw_value, secret_name or image_config",
            f.guest_path
        )),
    }
}

/// Writes the files under `root` (the machine's root filesystem as the host sees it).
pub fn write(root: &Path, files: &[MachineFile], secrets: &Secrets) -> Result<(), DriverError> {
    for f in files {
        let target = root.join(relative(&f.guest_path).map_err(DriverError::InvalidConfig)?);
        let data = content(f, Some(secrets)).map_err(DriverError::InvalidConfig)?;
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| DriverError::io(format!("create {}", dir.display()), e))?;
        }
        std::fs::write(&target, data)
            .map_err(|e| DriverError::io(format!("write {}", target.display()), e))?;
        let mode = f.mode.unwrap_or(0o644) & 0o7777;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
            .map_err(|e| DriverError::io(format!("chmod {}", target.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, raw: Option<&str>) -> MachineFile {
        MachineFile {
            guest_path: path.into(),
            raw_value: raw.map(str::to_string),
            mode: Some(0o600),
            ..Default::default()
        }
    }

    #[test]
    fn writes_decoded_files_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[file("/etc/app/config.txt", Some("aGVsbG8="))],
            &Secrets::default(),
        )
        .unwrap();
        let p = dir.path().join("etc/app/config.txt");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "hello");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn refuses_escapes_bad_base64_and_missing_content() {
        assert!(check(&[file("/../etc/passwd", Some("aA=="))])
            .unwrap_err()
            .contains(".."));
        assert!(check(&[file("/x", Some("not base64!"))])
            .unwrap_err()
            .contains("base64"));
        assert!(check(&[file("/x", None)])
            .unwrap_err()
            .contains("exactly one"));
    }

    #[test]
    fn secret_files_hold_the_decoded_secret_and_say_which_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let f = MachineFile {
            guest_path: "/etc/app/key.pem".into(),
            secret_name: Some("TLS_KEY".into()),
            ..Default::default()
        };
        assert!(
            check(std::slice::from_ref(&f)).is_ok(),
            "checked at start, not at create"
        );
        let secrets = Secrets([("TLS_KEY".to_string(), "c2VjcmV0".to_string())].into());
        write(dir.path(), std::slice::from_ref(&f), &secrets).unwrap();
        let got = std::fs::read(dir.path().join("etc/app/key.pem")).unwrap();
        assert_eq!(got, b"secret");
        let e = write(dir.path(), &[f], &Secrets::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("secret TLS_KEY is not set") && !e.contains("c2VjcmV0"),
            "{e}"
        );
    }
}
