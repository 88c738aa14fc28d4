#!/usr/bin/env bash
# Runs Hangar's tests: installs what they drive for real (containerd, runc, a registry,
# busybox-static, PostgreSQL, ...) when it is missing and this is root, then `cargo test`
# (the control plane on SQLite), then the integration suite again with every server's
# state on a real PostgreSQL started from initdb on a free port, and once more with each
# server's agent in a process of its own (`hangar server --remote-agent` beside
# `hangar agent --control URL`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
cargo test --workspace "$@"
if [ -n "${HANGAR_TEST_POSTGRES:-}" ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "== the integration suite again, on PostgreSQL"
  HANGAR_TEST_DATABASE=postgres cargo test --workspace --test integration "$@"
else
  echo "skipping the integration suite on PostgreSQL: PostgreSQL is not installed (apt-get install postgresql)" >&2
fi
echo "== the integration suite again, with the agent in a process of its own"
HANGAR_TEST_AGENT=process cargo test --workspace --test integration "$@"
