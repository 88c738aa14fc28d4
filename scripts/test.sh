#!/usr/bin/env bash
# Runs Hangar's tests: installs what they drive for real (containerd, runc, a registry,
# busybox-static, ...) when it is missing and this is root, then `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
cargo test --workspace "$@"
