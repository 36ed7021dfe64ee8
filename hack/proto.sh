#!/usr/bin/env bash
# proto.sh: regenerate the protobuf and gRPC code of the proxy <-> control
# plane API (proto/**/*.pb.go) and of the sample app (test/sampleapp/**/*.pb.go)
# from their .proto files.
#
# buf and the two protoc plugins are pure Go, built once from the Go module
# proxy at the versions pinned here (hack/go-install-tool.sh caches them under
# ~/.cache/trellis/tools) and linked into bin/; buf runs them from there, so
# no protoc and no remote plugin is needed. buf takes a few minutes to build
# the first time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${LOCALBIN:-$root/bin}

BUF_VERSION=${BUF_VERSION:-v1.75.0}
PROTOC_GEN_GO_VERSION=${PROTOC_GEN_GO_VERSION:-v1.36.12}
PROTOC_GEN_GO_GRPC_VERSION=${PROTOC_GEN_GO_GRPC_VERSION:-v1.6.2}

export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
cd "$root"
hack/go-install-tool.sh "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
hack/go-install-tool.sh "$bin/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"
hack/go-install-tool.sh "$bin/buf" github.com/bufbuild/buf/cmd/buf "$BUF_VERSION"

for module in proto test/sampleapp; do
  (cd "$root/$module" && PATH="$bin:$PATH" "$bin/buf" lint && PATH="$bin:$PATH" "$bin/buf" generate)
done
