//! Builds `init/main.rs` into a static `hangar-init` (std only, no crates) that the
//! containerd driver embeds and bind-mounts into machines with secrets.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=init/main.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("TARGET is set by cargo");
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-name",
            "hangar_init",
            "--target",
            &target,
        ])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .args(["-C", "target-feature=+crt-static"])
        .arg("-o")
        .arg(out.join("hangar-init"))
        .arg("init/main.rs")
        .status()
        .expect("run rustc for hangar-init");
    assert!(status.success(), "building the static hangar-init failed");
}
