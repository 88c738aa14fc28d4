#!/usr/bin/env bash
# Puts a statically linked busybox (Debian's busybox-static) next to each example's
# Dockerfile, so the examples build from `FROM scratch` with no registry or network.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="${BUSYBOX:-/bin/busybox}"
if ! file -L "$src" 2>/dev/null | grep -q 'statically linked' && ! ldd "$src" 2>&1 | grep -q 'not a dynamic'; then
  echo "$src is not a statically linked busybox: install busybox-static (scripts/deps.sh test)" >&2
  exit 1
fi
for d in "$root"/examples/*/; do
  [ -f "$d/Dockerfile" ] && install -m 0755 "$src" "$d/busybox"
done
echo "examples ready: $(ls -d "$root"/examples/*/ | wc -l) example(s) have busybox"
