#!/usr/bin/env bash
# cluster-deps.sh installs, from Debian, what the local cluster runs that is
# not built from the Go module proxy: containerd, runc, the CNI plugins,
# iptables and iproute2. It does nothing when they are there.
set -euo pipefail
need=()
for c in containerd runc ctr iptables ip; do command -v "$c" >/dev/null || need+=("$c"); done
for p in bridge host-local loopback portmap; do [ -x "/usr/lib/cni/$p" ] || need+=("cni-$p"); done
[ ${#need[@]} -eq 0 ] && { echo "cluster-deps: containerd, runc, CNI plugins, iptables and iproute2 are installed"; exit 0; }
if [ "$(id -u)" -ne 0 ]; then
  echo "cluster-deps: missing ${need[*]}; install as root: apt-get install containerd runc containernetworking-plugins iptables iproute2" >&2
  exit 1
fi
echo "cluster-deps: installing containerd runc containernetworking-plugins iptables iproute2 (missing: ${need[*]})"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq containerd runc containernetworking-plugins iptables iproute2 conntrack >/dev/null
