//! What the fixture tests share: where the fixtures are, reading one the way `hangar
//! deploy` does, its validation warnings, and the list of fixtures that are valid. The
//! assertions are the test files' own, not this module's.

use std::path::{Path, PathBuf};

use hangar_appconfig::{load, AppConfig, Loaded};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn read(name: &str) -> Loaded {
    match load(&fixture(name)) {
        Ok(l) => l,
        Err(e) => panic!("{name} should load: {e}"),
    }
}

pub fn cfg(name: &str) -> AppConfig {
    read(name).config
}

pub fn warnings(c: &AppConfig) -> Vec<String> {
    c.validate()
        .into_iter()
        .filter(|d| !d.is_error())
        .map(|d| d.to_string())
        .collect()
}

pub const VALID: &[&str] = &[
    "app-name.toml",
    "build-with-args.toml",
    "build.toml",
    "compose-autodetect.toml",
    "compose.toml",
    "docker.toml",
    "env-list.toml",
    "experimental-alt.toml",
    "format-quirks.toml",
    "image.toml",
    "mounts-array.toml",
    "old-format.toml",
    "old-pg-checks.toml",
    "old-processes.toml",
    "processes-multi.toml",
    "processes-multiwithapp.toml",
    "processes-none.toml",
    "processes-one.toml",
    "services-emptysection.toml",
    "services-multi.toml",
    "services-ports.toml",
    "setters-deploy.toml",
    "setters-experimental.toml",
    "setters-httpservice.toml",
    "setters-processes.toml",
    "setters-service.toml",
    "tomachine-compute-nodefault.toml",
    "tomachine-compute.toml",
    "tomachine-default-for-new-apps.toml",
    "tomachine-experimental.toml",
    "tomachine-hostdedicationid.toml",
    "tomachine-machinechecks.toml",
    "tomachine-mounts.toml",
    "tomachine-processgroups.toml",
    "tomachine-services.toml",
    "tomachine.toml",
];
