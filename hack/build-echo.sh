#!/usr/bin/env bash
# build-echo.sh builds Istio's echo server and client, the two programs of
# the echo image that the Gateway API's mesh conformance suite deploys
# (registry.k8s.io/gateway-api/echo-advanced is Istio's echo app), from the
# Go module proxy into ~/.cache/trellis/istio-echo/<version>/, beside the
# TLS key pair Istio's own echo image carries (cert.crt, cert.key), and
# reuses them when they are already there. It prints that directory on its
# last line.
set -euo pipefail
ver=${ISTIO_ECHO_VERSION:-v0.0.0-20260827124520-eed52ebb66ad}
out=${TRELLIS_CACHE:-$HOME/.cache/trellis}/istio-echo/$ver
log() { echo "build-echo: $*" >&2; }

if [ -x "$out/server" ] && [ -x "$out/client" ] && [ -f "$out/cert.crt" ] && [ -f "$out/cert.key" ]; then
  log "cached: Istio's echo server and client $ver in $out"
else
  start=$SECONDS
  log "building Istio's echo server and client $ver from the Go module proxy"
  mkdir -p "$(dirname "$out")"
  work=$(mktemp -d "$(dirname "$out")/.tmp.XXXX")
  trap 'rm -rf "$work"' EXIT
  # In an empty directory, so that this repository's go.mod has no say.
  cd "$work"
  export GOBIN=$work/bin GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
  go install -trimpath -ldflags='-s -w' \
    "istio.io/istio/pkg/test/echo/cmd/server@$ver" "istio.io/istio/pkg/test/echo/cmd/client@$ver"
  # Istio's echo image (pkg/test/echo/docker/Dockerfile.app) serves TLS with
  # this test pair, valid until 2296; the conformance suite's mesh tests
  # never check it.
  certs=$(go mod download -json "istio.io/istio@$ver" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')/tests/testdata/certs/dns
  install -m 0644 "$certs/cert-chain.pem" "$GOBIN/cert.crt"
  install -m 0644 "$certs/key.pem" "$GOBIN/cert.key"
  rm -rf "$out"
  mv "$GOBIN" "$out"
  log "built in $((SECONDS - start))s into $out"
fi
echo "$out"
