#!/usr/bin/env bash
# with-cluster.sh NAME COMMAND [ARG...]
# Brings the local cluster up with every image of the archive $IMAGES_ARCHIVE
# loaded, runs COMMAND from the repository's root with KUBECONFIG, KUBECTL
# and KUSTOMIZE set for it, and brings the cluster down whatever happened,
# failing if anything of the cluster is left on the host. It exits with
# COMMAND's status, or 1 when the cluster did not come up or did not come
# down clean; NAME starts its messages. hack/e2e.sh and hack/conformance.sh
# run their tests through it, after the images are built.
set -euo pipefail
name=$1
shift
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
    "$@" || rc=$?
else
  rc=1
  echo "$name: the cluster did not come up; logs under $cache/cluster/logs" >&2
fi
echo "$name: bringing the cluster down"
lc down || rc=1
exit $rc
