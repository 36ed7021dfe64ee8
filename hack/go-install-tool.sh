#!/usr/bin/env bash
# go-install-tool.sh LINK PACKAGE VERSION
# Builds PACKAGE@VERSION once into ~/.cache/trellis/tools/<name>-<version> and
# links LINK (under the repo's bin/) to it, so a fresh clone on a machine that
# built it before costs nothing.
set -euo pipefail
link=$1 pkg=$2 ver=$3
name=$(basename "$link")
cache=${TRELLIS_CACHE:-$HOME/.cache/trellis}/tools
target=$cache/$name-$ver
if [ ! -x "$target" ]; then
  echo "installing $pkg@$ver into $cache" >&2
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.tmp.XXXX")
  GOBIN=$tmp GOTOOLCHAIN=local CGO_ENABLED=0 go install "$pkg@$ver"
  mv "$tmp/$(ls "$tmp")" "$target"
  rm -rf "$tmp"
fi
mkdir -p "$(dirname "$link")"
ln -sfn "$target" "$link"
