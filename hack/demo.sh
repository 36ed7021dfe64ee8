#!/usr/bin/env bash
# demo.sh: Trellis on a real single-node cluster on this machine. It brings
# the local cluster up (make cluster-up has built and loaded every image),
# installs the Gateway API's route CRDs and the operator from
# config/without-cert-manager, applies the sample
# Mesh, deploys the sample app in a namespace labeled for the mesh, and shows
# a request answered, then runs the load generator and shows what the
# proxies reported (trellisctl stat, edges, check). The cluster stays up;
# `make cluster-down` ends it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(hack/build-k8s.sh kube-apiserver etcd kubectl kubelet kube-controller-manager kube-scheduler kube-proxy coredns 2>/dev/null | tail -n1)
export KUBECONFIG=${TRELLIS_CACHE:-$HOME/.cache/trellis}/cluster/kubeconfig
k() { "$bin/kubectl" "$@"; }
step() { printf '\n==> %s\n' "$*"; }

step "installing the Gateway API's route CRDs (standard channel, from its Go module): HTTPRoute, GRPCRoute, ReferenceGrant"
crds=$(go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)/config/crd/standard
k apply --server-side -f "$crds/gateway.networking.k8s.io_httproutes.yaml" -f "$crds/gateway.networking.k8s.io_grpcroutes.yaml" \
  -f "$crds/gateway.networking.k8s.io_referencegrants.yaml" >/dev/null

step "installing the operator: kustomize build config/without-cert-manager | kubectl apply"
bin/kustomize build config/without-cert-manager | k apply --server-side --force-conflicts -f - >/dev/null
k -n trellis-operator rollout status deployment/trellis-operator --timeout=180s
# The webhook answers once kube-proxy has its endpoint.
for _ in $(seq 60); do
  out=$(k apply --dry-run=server -f config/samples/mesh_v1alpha1_mesh.yaml 2>&1) && break
  case $out in *"failed calling webhook"*) sleep 1 ;; *) break ;; esac
done

step "applying the sample Mesh"
k apply -f config/samples/mesh_v1alpha1_mesh.yaml
k wait mesh/default --for=condition=Ready --timeout=180s
k get mesh

step "labeling namespace temperature for the mesh, then deploying the sample app in it"
k create namespace temperature --dry-run=client -o yaml | k apply -f - >/dev/null
k label namespace temperature trellis-injection=enabled --overwrite
bin/kustomize build test/sampleapp/manifests | k apply --server-side -f - >/dev/null
for d in temperature-api converter-v1 converter-v2; do k -n temperature rollout status deployment/$d --timeout=180s; done

step "kubectl get pods -A: the app's pods have their sidecar (2/2 with the native sidecar init container)"
k get pods -A -o wide
k -n temperature get pods -o custom-columns='POD:.metadata.name,INIT CONTAINERS:.spec.initContainers[*].name,CONTAINERS:.spec.containers[*].name'

step "a request to the temperature API's Service (through the API server's service proxy)"
# The Service's endpoints can trail the rollout by a moment: a few tries.
for i in $(seq 10); do
  if k get --raw '/api/v1/namespaces/temperature/services/temperature-api:http/proxy/temperature?city=Oslo&unit=F'; then break; fi
  [ "$i" -lt 10 ] || exit 1
  sleep 1
done
echo

step "the temperature API's proxy counted its calls to the converter (its admin port, 15020)"
pod=$(k -n temperature get pods -l app=temperature-api -o jsonpath='{.items[0].metadata.name}')
k get --raw "/api/v1/namespaces/temperature/pods/$pod:15020/proxy/metrics" | grep '^trellis_proxy_http_responses_total' || true

step "load: the sample load generator, meshed, 20 requests/s for 20 s"
k -n temperature delete job loadgen --ignore-not-found --wait >/dev/null
k -n temperature create job loadgen --image=ghcr.io/trellis-mesh/sample-loadgen:v0.1.0 -- \
  /usr/local/bin/loadgen --url='http://temperature-api:8080/temperature?city=Oslo&unit=F' --rate=20 --duration=20s >/dev/null
k -n temperature wait job/loadgen --for=condition=Complete --timeout=120s >/dev/null
k -n temperature logs job/loadgen | tail -n1
# The proxies report every 10 s; the control plane shows a window once
# every report has covered it.
sleep 20

step "trellisctl stat, edges and check: what the proxies reported to the control plane"
make --no-print-directory trellisctl >/dev/null
bin/trellisctl stat -n temperature
bin/trellisctl edges -n temperature
bin/trellisctl check || true

cat <<MSG

Trellis is running. Try:

  export KUBECONFIG=$KUBECONFIG PATH=$PWD/bin:\$PATH
  alias kubectl=$bin/kubectl
  kubectl trellis dashboard                     # the service graph, live, in your browser
  kubectl trellis stat -n temperature           # success rate, RPS, latency per workload
  kubectl trellis proxy-status -A               # each proxy's version, certificate, config
  kubectl get mesh default -o yaml              # conditions, CA expiry, control plane
  kubectl -n trellis-system get all             # what the operator made
  kubectl -n temperature logs deploy/temperature-api -c trellis-proxy   # the sidecar's log
  kubectl get mutatingwebhookconfiguration trellis-sidecar-injector-default -o yaml
  trellisctl inject -f test/sampleapp/manifests/converter.yaml   # offline injection
  kubectl apply -f - <<<'{"apiVersion":"mesh.trellis.dev/v1alpha1","kind":"Mesh","metadata":{"name":"x"},"spec":{"namespace":"trellis-system"}}'

When you are done: make cluster-down   (undoes everything it changed on this machine)
MSG
