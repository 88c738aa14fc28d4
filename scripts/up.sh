#!/usr/bin/env bash
# Brings Hangar up with its embedded defaults and shows it working: builds the binary,
# starts `hangar server` in the background (API on 127.0.0.1:4280, proxy on
# 127.0.0.1:8080 and :8443, registry on 127.0.0.1:5000, state under
# ~/.local/share/hangar), then deploys examples/web from its fly.toml and Dockerfile —
# built on the server with buildah, run on containerd — and fetches it through the proxy
# over HTTPS verified with the development CA, printing its URL.
# Without root (containerd needs it) it shows the process driver instead: an app, a
# machine, and a page served by a machine through the proxy.
# Stop the server with: kill "$(cat ~/.local/share/hangar/server.pid)"
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
if [ "$(id -u)" -eq 0 ]; then
  scripts/deps.sh test
else
  scripts/deps.sh build
fi
cargo build --release -q -p hangar-cli
hangar=$root/target/release/hangar
data=${HANGAR_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/hangar}
mkdir -p "$data"

containers=no
if [ "$(id -u)" -eq 0 ] && command -v containerd >/dev/null && command -v buildah >/dev/null; then
  containers=yes
fi
if ! curl -fsS http://127.0.0.1:4280/healthz >/dev/null 2>&1; then
  driver=process
  [ $containers = yes ] && driver=containerd
  "$hangar" server --driver "$driver" --data-dir "$data" >>"$data/server.log" 2>&1 &
  echo $! >"$data/server.pid"
  for _ in $(seq 200); do curl -fsS http://127.0.0.1:4280/healthz >/dev/null 2>&1 && break; sleep 0.1; done
  echo "hangar server started (pid $(cat "$data/server.pid"), $driver driver), log in $data/server.log"
fi
export HANGAR_API_TOKEN=${HANGAR_API_TOKEN:-$(cat "$data/admin-token")}
"$hangar" certs ca >"$data/dev-ca.pem"

if [ $containers = yes ]; then
  scripts/examples.sh
  cd "$root/examples/web"
  "$hangar" apps show hangar-web >/dev/null 2>&1 || "$hangar" apps create hangar-web
  "$hangar" deploy
  "$hangar" status -a hangar-web
  echo
  echo "GET https://hangar-web.localhost:8443/ (verified with the development CA, $data/dev-ca.pem)"
  curl -fsS --retry 5 --cacert "$data/dev-ca.pem" --resolve hangar-web.localhost:8443:127.0.0.1 \
    https://hangar-web.localhost:8443/
  echo
  echo "Your app is at https://hangar-web.localhost:8443/ — try: $hangar releases -a hangar-web"
  exit 0
fi

echo "containerd and buildah need root: showing the process driver instead"
"$hangar" apps show demo >/dev/null 2>&1 || "$hangar" apps create demo
"$hangar" machine run busybox -a demo --name "clock-$RANDOM" -- /bin/sh -c 'while true; do date; sleep 5; done'
"$hangar" machine list -a demo
echo

# A web machine behind the proxy, stopped when idle and started by the next request.
www=$data/demo-www
mkdir -p "$www" && echo "Hello from a Hangar machine" >"$www/index.html"
if command -v busybox >/dev/null 2>&1; then
  serve=(busybox httpd -f -p 127.0.0.1:9080 -h "$www")
elif command -v python3 >/dev/null 2>&1; then
  serve=(python3 -m http.server 9080 --bind 127.0.0.1 --directory "$www")
fi
if [ -n "${serve[*]:-}" ] && ! "$hangar" machine list -a demo --json | grep -q '"web-'; then
  "$hangar" machine run busybox -a demo --name "web-$RANDOM" -p 80:9080/tcp:http \
    -p 443:9080/tcp:tls:http --autostop stop -- "${serve[@]}"
fi
if [ -n "${serve[*]:-}" ]; then
  echo "GET http://demo.localhost:8080/"
  curl -fsS --retry 5 --retry-connrefused --resolve demo.localhost:8080:127.0.0.1 http://demo.localhost:8080/
  echo "GET https://demo.localhost:8443/ (verified with the development CA, $data/dev-ca.pem)"
  curl -fsS --cacert "$data/dev-ca.pem" --resolve demo.localhost:8443:127.0.0.1 https://demo.localhost:8443/
  "$hangar" ips list -a demo
fi
echo
echo "Try: $hangar machine list -a demo   (or point any Fly Machines API client at http://127.0.0.1:4280)"
