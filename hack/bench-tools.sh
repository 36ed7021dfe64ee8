#!/usr/bin/env bash
# bench-tools.sh installs what `make bench-proxy` runs, and prints each tool's
# path, one "name path" line a tool. It does nothing that is already done.
#
# haproxy (the proxy Trellis is compared with), wrk (closed-loop load) and
# h2load (HTTP/2 load, from nghttp2-client) come from Debian. fortio
# (fixed-rate load with latency percentiles) is built once from the Go module
# proxy at the version pinned here, by hack/go-install-tool.sh, into
# ~/.cache/trellis/tools/fortio-<version>, and linked as bin/fortio.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${LOCALBIN:-$root/bin}

# v1.68.2: from v1.69.0 on, fortio needs grol.io/grol, which the Go module
# proxy here does not serve.
FORTIO_VERSION=${FORTIO_VERSION:-v1.68.2}

packages=(haproxy wrk nghttp2-client)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench-tools: ${missing[*]} missing; install as root: apt-get install ${packages[*]}" >&2
    exit 1
  fi
  echo "bench-tools: installing ${missing[*]} from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; }; then
    echo "bench-tools: apt-get could not install ${packages[*]}; the proxy benchmark needs them (see the apt-get output above)" >&2
    exit 1
  fi
fi

GOTOOLCHAIN=${GOTOOLCHAIN:-local} "$root/hack/go-install-tool.sh" "$bin/fortio" fortio.org/fortio "$FORTIO_VERSION"

for t in haproxy wrk h2load; do
  echo "$t $(command -v "$t")"
done
echo "fortio $bin/fortio"
