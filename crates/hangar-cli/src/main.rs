//! `hangar`: the command line. `hangar server` runs the platform; every other command is
//! a client of its HTTP API, named as flyctl names it. `main` only parses, runs, and
//! turns a failure into one `Error: ...` line and a non-zero exit.

mod build_context;
mod commands;
mod config;
mod output;

use std::process::ExitCode;

use clap::Parser;

use commands::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The shim is a tiny synchronous process; it needs no runtime.
    match &cli.command {
        commands::Command::Shim(args) => {
            return ExitCode::from(hangar_runtime::process::shim::run(&args.dir) as u8)
        }
        commands::Command::LogDriver(args) => {
            return ExitCode::from(hangar_runtime::containerd::log_driver::run(&args.dir) as u8)
        }
        _ => {}
    }
    // The store serializes database work, so a few blocking threads are plenty; fewer
    // threads also keep the allocator's per-thread arenas, and so the RSS, small.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: start async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
