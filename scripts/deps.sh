#!/usr/bin/env bash
# Installs the system packages Hangar needs (Debian/Ubuntu), when they are missing.
# Usage: scripts/deps.sh build   — what building needs (protoc)
#        scripts/deps.sh test    — that, plus what the tests drive for real
#        scripts/deps.sh bench   — that, plus the peers the benchmarks compare against
# As root it installs with apt-get; otherwise it says what to install.
set -euo pipefail
build=(protobuf-compiler)
test=(ca-certificates curl procps util-linux mount e2fsprogs iproute2 iptables busybox-static containerd runc
      docker-registry apache2-utils pebble openssl buildah postgresql postgresql-client
      unbound bind9-dnsutils wireguard-go wireguard-tools)
bench=(nginx-light wrk skopeo dnsperf)
case "${1:-build}" in
  build) want=("${build[@]}") ;;
  test) want=("${build[@]}" "${test[@]}") ;;
  bench) want=("${build[@]}" "${test[@]}" "${bench[@]}") ;;
  *) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac
# The tests' S3-compatible server (s3s-fs, which checks request signatures) comes from
# crates.io, not apt; installed with cargo once it is there.
s3_server() {
  [ "${1:-build}" = build ] && return 0
  command -v s3s-fs >/dev/null 2>&1 || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ] && return 0
  if command -v cargo >/dev/null 2>&1; then
    cargo install --locked --quiet --features binary --version 0.14.1 s3s-fs ||
      { echo "cannot install s3s-fs with cargo" >&2; exit 1; }
  else
    echo "missing s3s-fs (install Rust, then: cargo install --locked --features binary --version 0.14.1 s3s-fs)" >&2
  fi
}
trap 's3_server "${1:-build}"' EXIT
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${missing[*]} (install them, e.g. sudo apt-get install ${missing[*]})" >&2
  [ "${1:-build}" = build ] && exit 1
  echo "the tests that need them will say why they skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
