#!/usr/bin/env bash
# Brings Hangar up with its embedded defaults and shows it working: builds the
# binary, starts `hangar server` in the background (API on 127.0.0.1:4280, state under
# ~/.local/share/hangar), creates an app, runs a machine in it and lists it.
# Stop the server with: kill "$(cat ~/.local/share/hangar/server.pid)"
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cargo build --release -q -p hangar-cli
hangar=$PWD/target/release/hangar
data=${HANGAR_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/hangar}
mkdir -p "$data"

if ! curl -fsS http://127.0.0.1:4280/healthz >/dev/null 2>&1; then
  "$hangar" server --driver process --data-dir "$data" >>"$data/server.log" 2>&1 &
  echo $! >"$data/server.pid"
  for _ in $(seq 100); do curl -fsS http://127.0.0.1:4280/healthz >/dev/null 2>&1 && break; sleep 0.1; done
  echo "hangar server started (pid $(cat "$data/server.pid")), log in $data/server.log"
fi
export HANGAR_API_TOKEN=${HANGAR_API_TOKEN:-$(cat "$data/admin-token")}

"$hangar" apps show demo >/dev/null 2>&1 || "$hangar" apps create demo
"$hangar" machine run busybox -a demo --name "clock-$RANDOM" -- /bin/sh -c 'while true; do date; sleep 5; done'
"$hangar" machine list -a demo
echo
echo "Try: $hangar machine list -a demo   (or point any Fly Machines API client at http://127.0.0.1:4280)"
