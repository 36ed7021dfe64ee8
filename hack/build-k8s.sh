#!/usr/bin/env bash
# build-k8s.sh builds pinned Kubernetes and etcd binaries from the Go module proxy
# into ~/.cache/trellis/k8s/<version>/ and reuses them when they are already there.
#
#   hack/build-k8s.sh [binary ...]      default: kube-apiserver etcd kubectl
#
# Binaries: any command under k8s.io/kubernetes/cmd (kube-apiserver, kubelet,
# kube-controller-manager, kube-scheduler, kube-proxy, kubectl, ...), etcd and
# coredns (the local cluster's DNS).
# It prints the directory that holds them on its last line, so callers can do
# KUBEBUILDER_ASSETS=$(hack/build-k8s.sh | tail -n1).
#
# Why a wrapper module: k8s.io/kubernetes replaces its staging modules with
# ./staging/..., which `go install pkg@version` refuses. The wrapper requires
# k8s.io/kubernetes and replaces each of those modules with its published version.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.7.3}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
CACHE=${TRELLIS_CACHE:-$HOME/.cache/trellis}
OUT=$CACHE/k8s/$K8S_VERSION
ETCD_OUT=$CACHE/etcd/$ETCD_VERSION
COREDNS_OUT=$CACHE/coredns/$COREDNS_VERSION

bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(kube-apiserver etcd kubectl)

log() { echo "build-k8s: $*" >&2; }

missing=()
for b in "${bins[@]}"; do
  if [ "$b" = etcd ]; then
    [ -x "$ETCD_OUT/etcd" ] || missing+=("$b")
  elif [ "$b" = coredns ]; then
    [ -x "$COREDNS_OUT/coredns" ] || missing+=("$b")
  else
    [ -x "$OUT/$b" ] || missing+=("$b")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  log "cached: ${bins[*]} (Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, CoreDNS $COREDNS_VERSION) in $OUT"
else
  command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
  mkdir -p "$OUT" "$ETCD_OUT" "$COREDNS_OUT"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

  k8s=()
  for b in "${missing[@]}"; do [ "$b" = etcd ] || [ "$b" = coredns ] || k8s+=("$b"); done

  if [ ${#k8s[@]} -gt 0 ]; then
    start=$SECONDS
    log "building ${k8s[*]} $K8S_VERSION from the Go module proxy (cold: about 10 minutes on 2 cores)"
    mkdir -p "$work/k8s"
    cd "$work/k8s"
    go mod init trellis.local/k8sbuild >/dev/null 2>&1
    go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
    # Every module that kubernetes requires at v0.0.0 and replaces with ./staging
    # gets its published twin, v0.<minor>.<patch>.
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    staging=$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")
    sv="v0.${K8S_VERSION#v1.}"
    for m in $staging; do
      go mod edit -replace "$m=$m@$sv"
    done
    pkgs=()
    for b in "${k8s[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
    printf 'package tools\n\nimport (\n' > tools.go
    for p in "${pkgs[@]}"; do printf '\t_ "%s"\n' "$p" >> tools.go; done
    printf ')\n' >> tools.go
    sed -i '1i //go:build tools' tools.go
    go mod tidy >/dev/null 2>&1 || go mod download all >/dev/null
    minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
    ld="-s -w"
    for vp in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $vp.gitVersion=$K8S_VERSION -X $vp.gitMajor=1 -X $vp.gitMinor=$minor -X $vp.gitTreeState=clean"
    done
    for b in "${k8s[@]}"; do
      go build -trimpath -ldflags "$ld" -o "$OUT/$b.tmp" "k8s.io/kubernetes/cmd/$b"
      mv "$OUT/$b.tmp" "$OUT/$b"
      log "built $b"
    done
    log "Kubernetes binaries built in $((SECONDS - start)) s"
  fi

  for b in "${missing[@]}"; do
    [ "$b" = etcd ] || continue
    start=$SECONDS
    log "building etcd $ETCD_VERSION from the Go module proxy"
    mkdir -p "$work/etcd"
    cd "$work/etcd"
    go mod init trellis.local/etcdbuild >/dev/null 2>&1
    cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    go mod edit -require "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go mod tidy >/dev/null
    go build -trimpath -ldflags "-s -w" -o "$ETCD_OUT/etcd.tmp" .
    mv "$ETCD_OUT/etcd.tmp" "$ETCD_OUT/etcd"
    log "etcd built in $((SECONDS - start)) s"
  done

  if [[ " ${missing[*]} " == *" coredns "* ]]; then
    start=$SECONDS
    log "building CoreDNS $COREDNS_VERSION from the Go module proxy"
    mkdir -p "$work/coredns"
    cd "$work/coredns"
    go mod init trellis.local/corednsbuild >/dev/null 2>&1
    printf 'package tools\n\nimport _ "github.com/coredns/coredns"\n' > tools.go
    sed -i '1i //go:build tools' tools.go
    go mod edit -require "github.com/coredns/coredns@$COREDNS_VERSION"
    go mod tidy >/dev/null
    go build -trimpath -ldflags "-s -w" -o "$COREDNS_OUT/coredns.tmp" github.com/coredns/coredns
    mv "$COREDNS_OUT/coredns.tmp" "$COREDNS_OUT/coredns"
    log "CoreDNS built in $((SECONDS - start)) s"
  fi
fi

# Callers find every binary in one directory.
if [[ " ${bins[*]} " == *" etcd "* ]]; then
  ln -sf "$ETCD_OUT/etcd" "$OUT/etcd"
fi
if [[ " ${bins[*]} " == *" coredns "* ]]; then
  ln -sf "$COREDNS_OUT/coredns" "$OUT/coredns"
fi
echo "$OUT"
