//! `hangar-bench`: starts a real `hangar server` on loopback and measures what a user of
//! the Machines API feels, each figure beside a peer measured in the same run.
//!
//! `hangar-bench [process]` benchmarks the process driver; `hangar-bench containerd`
//! the containerd driver (root, containerd, runc, docker-registry, busybox-static and
//! skopeo needed); `hangar-bench proxy` the edge proxy (nginx and wrk needed, containerd
//! used when available); `hangar-bench deploy` deploys to 10 machines with each
//! strategy (root, containerd and buildah needed); `hangar-bench store` the same work
//! with the control plane on SQLite and on PostgreSQL (PostgreSQL installed); `hangar-bench
//! volumes` volumes on loop-mounted ext4 (root needed); `hangar-bench private`
//! `.internal` DNS against unbound (dnsperf needed), `hangar proxy` against a direct
//! connection and the `ssh console` keystroke round trip (root and containerd needed). `--hangar PATH` names the `hangar` binary (default: next to this one).
//! Run from a release build: `cargo run --release -p hangar-bench -- containerd`.

mod common;
mod containerd;
mod deploy;
mod feed;
mod private;
mod process;
mod proxy;
mod store;
mod volumes;

/// Runs the benchmark; a failure is one `Error: ...` line and a non-zero exit, never a
/// backtrace, whatever `RUST_BACKTRACE` says.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        None | Some("process") | Some("--hangar") => process::main().await,
        Some("containerd") => containerd::main().await,
        Some("proxy") => proxy::main().await,
        Some("deploy") => deploy::main().await,
        Some("store") => store::main().await,
        Some("feed") => store::feed_only().await,
        Some("volumes") => volumes::main().await,
        Some("private") => private::main().await,
        Some(other) => {
            anyhow::bail!(
                "unknown benchmark {other:?}: use process, containerd, proxy, deploy, store, feed, volumes or private"
            )
        }
    }
}
