//! Integration tests: each starts a real `hangar server` on a free loopback port with a
//! temp data dir and drives it over HTTP and through the `hangar` CLI. One test binary
//! with topic modules keeps link time down.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod acme;
mod agent_apart;
mod api_defences;
mod autostart;
mod bad_input;
mod billing;
mod cli;
mod containerd;
mod containerd_dns;
mod containerd_flycast;
mod containerd_net;
mod control_plane;
mod cross_org;
mod deploy_safety;
mod deploys;
mod edge_tls;
mod edge_traffic;
mod flyctl_habits;
mod harness;
mod leases;
mod lifecycle;
mod logs;
mod orgs;
mod private_proxy;
mod proxy;
mod raw_volumes;
mod recovery;
mod requests;
mod snapshot_bucket;
mod ssh_console;
mod tokens;
mod volume_workflow;
mod volumes;
mod wireguard;
mod workflow;
