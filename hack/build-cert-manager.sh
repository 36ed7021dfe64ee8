#!/usr/bin/env bash
# build-cert-manager.sh builds cert-manager's controller and CA injector
# (one program, hack/certmanager, made of cert-manager's Go packages from
# the Go module proxy) into ~/.cache/trellis/cert-manager/<version>/, beside
# cert-manager's CRDs from the same module (crds/), and reuses them when
# they are there and were built from the same source (a stamp holds the
# hash of hack/certmanager's files). It prints that directory on its last
# line. `make test-e2e` images it: config/default gets its webhook's serving
# certificate from it.
set -euo pipefail
cd "$(dirname "$0")/certmanager"
ver=$(sed -n 's/^[[:space:]]*github.com\/cert-manager\/cert-manager \(v[^ ]*\)$/\1/p' go.mod)
out=${TRELLIS_CACHE:-$HOME/.cache/trellis}/cert-manager/$ver
stamp=$(cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)
log() { echo "build-cert-manager: $*" >&2; }

if [ -x "$out/cert-manager" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
  log "cached: cert-manager $ver in $out"
else
  start=$SECONDS
  log "building cert-manager $ver (controller and cainjector) from the Go module proxy"
  mkdir -p "$(dirname "$out")"
  work=$(mktemp -d "$(dirname "$out")/.tmp.XXXX")
  trap 'rm -rf "$work"' EXIT
  export GOTOOLCHAIN=local CGO_ENABLED=0
  go build -trimpath -ldflags='-s -w' -o "$work/cert-manager" .
  mod=$(go list -m -f '{{.Dir}}' github.com/cert-manager/cert-manager)
  mkdir "$work/crds"
  install -m 0644 "$mod"/deploy/crds/*.yaml "$work/crds/"
  echo "$stamp" > "$work/stamp"
  rm -rf "$out"
  mv "$work" "$out"
  log "built in $((SECONDS - start))s into $out"
fi
echo "$out"
