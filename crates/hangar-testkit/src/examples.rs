//! The project's `examples/` as tests and benchmarks use them: a private copy of one,
//! with the static busybox its Dockerfile copies in, and its app renamed.

use std::path::{Path, PathBuf};

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

/// A copy of `examples/<name>` under `into`, its fly.toml's `app` set to `app` and
/// `/bin/busybox` (busybox-static) beside its Dockerfile. Returns the copy's path.
pub fn example(name: &str, app: &str, into: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let dir = into.join(name);
    copy_dir(&source, &dir).expect("copy the example");
    std::fs::copy("/bin/busybox", dir.join("busybox"))
        .expect("copy /bin/busybox (busybox-static) next to the example's Dockerfile");
    let toml = dir.join("fly.toml");
    let text = std::fs::read_to_string(&toml).expect("the example's fly.toml");
    let renamed: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("app = ") {
                format!("app = \"{app}\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&toml, renamed.join("\n") + "\n").expect("write the example's fly.toml");
    dir
}
