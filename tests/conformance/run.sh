#!/usr/bin/env bash
# Conformance: runs Schemathesis against Fly's Machines API schema on a real
# `hangar server` (process driver, loopback, temp data dir, loop-mounted volumes) and
# fails on any 5xx or any response that breaks the schema. Usage: tests/conformance/run.sh [path/to/hangar]
# With HANGAR_CONF_DATABASE=postgres the server keeps its state on a PostgreSQL started
# here from initdb on a free port.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
hangar=${1:-$root/target/debug/hangar}
schema=${HANGAR_SCHEMA:-$root/../shared/fly/machines-openapi.yaml}
examples=${HANGAR_CONF_EXAMPLES:-40}

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Machines the fuzzer creates get an empty PATH: random commands resolve to nothing.
mkdir -p "$work/empty-path"
database=()
pgdir=
if [ "${HANGAR_CONF_DATABASE:-sqlite}" = postgres ]; then
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  pgdir=$(mktemp -d)
  as=()
  if [ "$(id -u)" = 0 ]; then chown postgres "$pgdir"; as=(runuser -u postgres --); fi
  "${as[@]}" "$pgbin/initdb" -A trust -U postgres -E UTF8 -D "$pgdir/data" >/dev/null
  "${as[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
    -o "-p $pgport -k $pgdir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  database=(--database "postgres://postgres@127.0.0.1:$pgport/postgres")
  export HANGAR_MASTER_KEY=${HANGAR_MASTER_KEY:-$(openssl rand -hex 32)}
  echo "conformance on PostgreSQL (127.0.0.1:$pgport)"
fi
PATH="$work/empty-path" HANGAR_CONFIG="$work/cli.toml" HANGAR_LOG=warn \
  "$hangar" server --driver process --data-dir "$work/data" --api-listen "127.0.0.1:$port" --http-listen 127.0.0.1:0 --volume-overcommit 100 "${database[@]}" >"$work/server.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  if [ -n "$pgdir" ]; then
    "${as[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pgdir"
  fi
  # Machines outlive the server by design; end the ones this run made (their working
  # directories are under the data dir).
  for p in /proc/[0-9]*; do
    case "$(readlink "$p/cwd" 2>/dev/null)" in "$work"/*) kill -KILL "${p#/proc/}" 2>/dev/null || true ;; esac
  done
  # Volumes stay mounted on loop devices after the server; let them go.
  grep -o " $work/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  losetup -n -O NAME,BACK-FILE 2>/dev/null | while read -r dev file; do
    case "$file" in "$work"/*) losetup -d "$dev" 2>/dev/null || true ;; esac
  done
  for fs in "$work"/data/volumes/*/fs; do [ -e "$fs" ] && chattr -i "$fs" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 100); do [ -s "$work/data/admin-token" ] && curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
token=$(cat "$work/data/admin-token")
api() { curl -fsS -H "Authorization: Bearer $token" -H 'content-type: application/json' "$@"; }
base="http://127.0.0.1:$port/v1"
api -X POST "$base/apps" -d '{"app_name":"conformance","org_slug":"personal"}' >/dev/null
api -X POST "$base/apps" -d '{"app_name":"conformance-spare","org_slug":"personal"}' >/dev/null
machine='{"config":{"image":"busybox","init":{"exec":["/bin/sleep","3600"]},"restart":{"policy":"always"}}}'
main=$(api -X POST "$base/apps/conformance/machines" -d "$machine" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
spare=$(api -X POST "$base/apps/conformance/machines" -d "$machine" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

volume() { api -X POST "$base/apps/conformance/volumes" -d "{\"name\":\"$1\",\"size_gb\":1}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
volume=$(volume data)
spare_volume=$(volume spare)
export HANGAR_CONF_VOLUME=$volume HANGAR_CONF_SPARE_VOLUME=$spare_volume
export HANGAR_CONF_TOKEN=$token HANGAR_CONF_APP=conformance HANGAR_CONF_MACHINE=$main
export HANGAR_CONF_SPARE_APP=conformance-spare HANGAR_CONF_SPARE_MACHINE=$spare
# One worker: Hypothesis draws are not safe across threads, and two workers have made
# the examples phase fail at random ("Inconsistent results") with no fault in the API.
schemathesis --config-file "$here/schemathesis.toml" run "$schema" \
  --url "$base" \
  --checks not_a_server_error,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --mode positive \
  --max-examples "$examples" \
  --workers 1 \
  --no-color
