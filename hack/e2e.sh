#!/usr/bin/env bash
# e2e.sh brings the local cluster up with every image loaded, runs the
# end-to-end tests on it, and brings it down, failing if anything of the
# cluster is left on the host. Run by `make test-e2e`, after `make images`.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${TRELLIS_CACHE:-$HOME/.cache/trellis}
bin=$(hack/build-k8s.sh kube-apiserver etcd kubectl kubelet kube-controller-manager kube-scheduler kube-proxy coredns | tail -n1)
archive=${IMAGES_ARCHIVE:-$cache/images/trellis-${VERSION:-v0.1.0}.tar}
go build -o bin/localcluster ./hack/localcluster
lc() { bin/localcluster --bin "$bin" "$@"; }

rc=0
# A cluster left by an interrupted run is taken down first.
lc down >/dev/null 2>&1 || true
if lc --images "$archive" up; then
  KUBECONFIG=$(lc status | sed -n 's/^export KUBECONFIG=//p') \
  KUBECTL=$bin/kubectl KUSTOMIZE=$PWD/bin/kustomize \
    go test -tags e2e ./test/e2e -count=1 -v -timeout 20m || rc=$?
else
  rc=1
  echo "e2e: the cluster did not come up; logs under $cache/cluster/logs" >&2
fi
echo "e2e: bringing the cluster down"
lc down || rc=1
exit $rc
