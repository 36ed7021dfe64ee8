#!/usr/bin/env bash
# conformance.sh runs the Gateway API's conformance suite for meshes
# (test/conformance: profiles MESH-HTTP and MESH-GRPC) against Trellis on
# the local cluster: up with every image loaded, the Gateway API's CRDs, the
# operator and the sample Mesh, the suite, down. It writes the suite's
# report to $CONFORMANCE_REPORT (default _output/conformance/mesh-report.yaml)
# and passes $CONFORMANCE_FLAGS to the suite (--run-test=MeshBasic, ...).
# Run by `make conformance`, after the images, the echo image among them.
set -euo pipefail
cd "$(dirname "$0")/.."
# The archive `make conformance` builds: make's images and the echo image.
export IMAGES_ARCHIVE=${IMAGES_ARCHIVE:-${TRELLIS_CACHE:-$HOME/.cache/trellis}/images/trellis-${VERSION:-v0.1.0}-conformance.tar}
report=${CONFORMANCE_REPORT:-_output/conformance/mesh-report.yaml}
read -ra flags <<<"${CONFORMANCE_FLAGS:-}"
mkdir -p "$(dirname "$report")"
# The test runs in its package's directory: give it an absolute path.
report=$(realpath "$(dirname "$report")")/$(basename "$report")
# A report from an earlier run must not pass for this one's.
rm -f "$report"

rc=0
hack/with-cluster.sh conformance \
  go test -tags conformance ./test/conformance -count=1 -v -timeout 60m -args --report-output="$report" "${flags[@]}" || rc=$?
if [ -f "$report" ]; then
  echo "conformance: report in $report"
else
  echo "conformance: no report: the suite did not get to the end; see the log above" >&2
fi
exit $rc
