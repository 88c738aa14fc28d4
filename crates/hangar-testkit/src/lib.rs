//! Test kit shared by the integration tests and the benchmarks: a Distribution registry
//! started on a free loopback port, and test images built from `busybox-static` (with a
//! probe that reports what a machine sees) pushed to it, copies of the project's
//! examples to deploy, a real PostgreSQL to run the control plane's store on, and a
//! real S3-compatible server for snapshots kept in a bucket, and a real DNS resolver
//! (unbound) with `dig`. No test depends on Docker
//! Hub.

// A test kit panics with a message instead of returning errors.
#![allow(clippy::unwrap_used)]

pub mod cleanup;
pub mod dns;
pub mod examples;
pub mod postgres;
pub mod registry;
pub mod s3;

pub use cleanup::cleanup;
pub use dns::{dig, dns_tools_available, TestResolver};
pub use examples::{copy_dir, example};
pub use postgres::{postgres_available, TestPostgres};
pub use registry::{builds_available, containerd_available, TestRegistry};
pub use s3::{s3_available, TestBucket};
