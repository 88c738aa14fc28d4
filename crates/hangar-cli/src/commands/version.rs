//! `hangar version [--json]`: this binary's version, the commit it was built from, and
//! the platform, in flyctl's shape.

use anyhow::Result;
use clap::Args;
use serde::Serialize;

#[derive(Args)]
pub struct VersionArgs {
    /// Print as JSON
    #[arg(short = 'j', long)]
    pub json: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Info {
    name: &'static str,
    version: &'static str,
    commit: &'static str,
    /// When that commit was made.
    build_date: &'static str,
    #[serde(rename = "OS")]
    os: &'static str,
    architecture: &'static str,
}

fn info() -> Info {
    Info {
        name: "hangar",
        version: env!("CARGO_PKG_VERSION"),
        commit: env!("HANGAR_COMMIT"),
        build_date: env!("HANGAR_COMMIT_DATE"),
        os: std::env::consts::OS,
        architecture: match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        },
    }
}

pub fn run(args: VersionArgs) -> Result<()> {
    let i = info();
    if args.json {
        return crate::output::json(&i);
    }
    println!(
        "hangar v{} {}/{} Commit: {} BuildDate: {}",
        i.version, i.os, i.architecture, i.commit, i.build_date
    );
    Ok(())
}
