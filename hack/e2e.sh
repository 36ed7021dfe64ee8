#!/usr/bin/env bash
# e2e.sh brings the local cluster up with every image loaded, runs the
# end-to-end tests on it, and brings it down, failing if anything of the
# cluster is left on the host. Run by `make test-e2e`, after `make images`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec hack/with-cluster.sh e2e go test -tags e2e ./test/e2e -count=1 -v -timeout 20m
