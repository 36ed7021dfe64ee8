# Trellis. `make help` lists the targets.

VERSION ?= v0.1.0
IMAGE ?= ghcr.io/trellis-mesh/trellis
K8S_VERSION ?= v1.37.2
ETCD_VERSION ?= v3.7.3

# Everything slow to build lives here, keyed by version, outside the repo.
CACHE ?= $(HOME)/.cache/trellis
LOCALBIN ?= $(CURDIR)/bin

# Tools, pinned. Each is built once from the Go module proxy into
# $(CACHE)/tools/<name>-<version> and linked into bin/.
CONTROLLER_GEN_VERSION ?= v0.23.0
KUSTOMIZE_VERSION ?= v5.8.1
GOLANGCI_LINT_VERSION ?= v2.15.0

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
KUSTOMIZE ?= $(LOCALBIN)/kustomize
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint

export GOTOOLCHAIN ?= local
export K8S_VERSION ETCD_VERSION
export TRELLIS_CACHE = $(CACHE)

LDFLAGS := -s -w -X github.com/trellis-mesh/trellis/version.Version=$(VERSION) -X github.com/trellis-mesh/trellis/version.Image=$(IMAGE)

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-20s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Write the CRDs, RBAC and webhook manifests from the code's markers.
	$(CONTROLLER_GEN) rbac:roleName=operator crd webhook paths="./..." output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: controller-gen ## Write the API types' DeepCopy methods.
	$(CONTROLLER_GEN) object paths="./apis/..."

.PHONY: fmt
fmt: ## Format the code.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: golangci-lint ## Run golangci-lint.
	$(GOLANGCI_LINT) run ./...

.PHONY: verify-generated
verify-generated: manifests generate ## Fail when committed generated files are stale.
	@if [ -n "$$(git status --porcelain -- apis config)" ]; then \
		echo "Generated files are stale: run 'make manifests generate' and commit the result." >&2; \
		git status --porcelain -- apis config >&2; git --no-pager diff --stat -- apis config >&2; exit 1; \
	fi
	@echo "generated files are up to date"

.PHONY: verify-kustomize
verify-kustomize: kustomize ## Check that every kustomization under config/ builds.
	@for k in config/default config/without-cert-manager config/crd config/rbac config/samples config/prometheus config/scorecard config/manifests config/grafana; do \
		$(KUSTOMIZE) build $$k > /dev/null || { echo "kustomize build $$k failed" >&2; exit 1; }; \
	done
	@echo "kustomizations build"

# The OLM bundle's channels (operator-sdk's CHANNELS and DEFAULT_CHANNEL).
CHANNELS ?= candidate
DEFAULT_CHANNEL ?= candidate

.PHONY: bundle
bundle: manifests kustomize ## Write the OLM bundle (bundle/, bundle.Dockerfile) for VERSION and IMAGE from config/manifests and the API's markers.
	$(KUSTOMIZE) build config/manifests | go run ./hack/bundlegen \
		--version $(VERSION) --image $(IMAGE) --channels $(CHANNELS) --default-channel $(DEFAULT_CHANNEL)

.PHONY: verify-bundle
verify-bundle: bundle ## Fail when the committed OLM bundle is stale.
	@if [ -n "$$(git status --porcelain -- bundle bundle.Dockerfile)" ]; then \
		echo "The OLM bundle is stale: run 'make bundle' and commit the result." >&2; \
		git status --porcelain -- bundle bundle.Dockerfile >&2; git --no-pager diff --stat -- bundle bundle.Dockerfile >&2; exit 1; \
	fi
	@echo "the OLM bundle is up to date"

##@ Test

.PHONY: test
test: verify-generated verify-proto verify-kustomize verify-bundle bundle-validate vet lint test-go test-dashboard bench-operator bench-injector bench-controlplane bench-proxy-short test-e2e conformance ## Everything CI runs (as root).

# operator-sdk cannot be installed here: hack/bundlevalidate runs the same
# checks with operator-framework/api's validators, against the Kubernetes
# version the project tests on (removed APIs are errors, not warnings).
.PHONY: bundle-validate
bundle-validate: ## Validate bundle/ as `operator-sdk bundle validate --select-optional suite=operatorframework` does; fail on any error or warning.
	go run ./hack/bundlevalidate --k8s-version $(K8S_VERSION) bundle

# The conformance run's archive is the images' plus the echo image, under
# its own name (conformance-images), so that `make test` builds both
# archives and neither run rebuilds the other's.
CONFORMANCE_REPORT ?= $(CURDIR)/_output/conformance/mesh-report.yaml
CONFORMANCE_FLAGS ?=
CONFORMANCE_ARCHIVE = $(CACHE)/images/trellis-$(VERSION)-conformance.tar
export CONFORMANCE_REPORT CONFORMANCE_FLAGS

.PHONY: conformance
conformance: cluster-deps conformance-images kustomize ## Gateway API conformance for meshes (MESH-HTTP, MESH-GRPC) on the local cluster: up, suite, down; report in _output/conformance/ (root).
	IMAGES_ARCHIVE=$(CONFORMANCE_ARCHIVE) hack/conformance.sh

.PHONY: envtest-assets
envtest-assets: ## Build (or reuse) kube-apiserver, etcd and kubectl for the integration tests.
	@hack/build-k8s.sh kube-apiserver etcd kubectl > /dev/null

.PHONY: test-go
test-go: envtest-assets ## Unit and integration tests (a real kube-apiserver and etcd).
	KUBEBUILDER_ASSETS="$$(hack/build-k8s.sh kube-apiserver etcd kubectl | tail -n1)" \
		go test ./... -count=1 -timeout 20m

# The dashboard's page in Debian's chromium, headless: the tests may not
# skip for want of a browser here. Screenshots go to _output/screenshots/.
.PHONY: test-dashboard
test-dashboard: ## The dashboard's page in headless Chromium (installed from Debian when missing, as root): graph, colours, live updates, API errors; screenshots in _output/screenshots/.
	@hack/install-chromium.sh > /dev/null
	TRELLIS_REQUIRE_CHROMIUM=1 go test ./controlplane/dashboard/... ./test/browser/... -count=1 -timeout 5m

.PHONY: bench-operator
bench-operator: envtest-assets ## How long the operator takes from Mesh creation to its objects and to Ready.
	KUBEBUILDER_ASSETS="$$(hack/build-k8s.sh kube-apiserver etcd kubectl | tail -n1)" \
		go test ./controllers -run '^$$' -bench BenchmarkMesh -benchtime 5x -count=1

.PHONY: bench-injector
bench-injector: envtest-assets ## Sidecar injection server side: admissions per second and p50/p99 latency.
	KUBEBUILDER_ASSETS="$$(hack/build-k8s.sh kube-apiserver etcd kubectl | tail -n1)" \
		go test ./webhooks -run '^$$' -bench BenchmarkPodInjection -benchtime 3000x -count=1

.PHONY: bench-controlplane
bench-controlplane: envtest-assets ## Control plane at scale: 5k Services, 50k endpoints, 2k streams (change to proxy p50/p99, memory), and certificates per second.
	KUBEBUILDER_ASSETS="$$(hack/build-k8s.sh kube-apiserver etcd kubectl | tail -n1)" \
		go test ./controlplane/discovery -run '^$$' -bench BenchmarkEndpointPropagation -benchtime 300x -count=1
	KUBEBUILDER_ASSETS="$$(hack/build-k8s.sh kube-apiserver etcd kubectl | tail -n1)" \
		go test ./controlplane -run '^$$' -bench BenchmarkCertify -benchtime 2000x -count=1

# Overrides for bench-proxy, e.g. BENCH_PROXY_FLAGS='-duration 3s -max-duration 3s -scenarios "direct,haproxy 1 hop"'.
BENCH_PROXY_FLAGS ?=

# The Trellis rows run their control plane against kube-apiserver and etcd
# (KUBEBUILDER_ASSETS); the other rows run without them.
.PHONY: bench-proxy
bench-proxy: ## The proxy against HAProxy under the same load (root): p50/p99/p99.9 at 1000 req/s, CPU and RSS of the proxies, max req/s.
	@hack/bench-tools.sh >&2
	KUBEBUILDER_ASSETS="$$(hack/build-k8s.sh kube-apiserver etcd kubectl | tail -n1)" \
		go run ./test/bench/proxybench -fortio $(LOCALBIN)/fortio $(BENCH_PROXY_FLAGS)

# make test runs every row briefly: the table is printed, and a Trellis row
# whose requests did not take the mesh's path (its proxies' metrics say)
# fails the run.
.PHONY: bench-proxy-short
bench-proxy-short: ## bench-proxy with 3-second runs, as make test runs it.
	$(MAKE) bench-proxy BENCH_PROXY_FLAGS='-duration 3s -max-duration 3s -warmup 1s'

##@ Local cluster and end-to-end tests

# Every binary the local cluster runs, built from the Go module proxy.
CLUSTER_BINARIES := kube-apiserver etcd kubectl kubelet kube-controller-manager kube-scheduler kube-proxy coredns
IMAGES_ARCHIVE ?= $(CACHE)/images/trellis-$(VERSION).tar
COREDNS_VERSION ?= v1.15.0
export COREDNS_VERSION

# The Gateway API conformance suite's echo image: the tag its module's
# mesh/manifests.yaml names (pulled by nobody: the cluster reaches no
# registry), built from Istio's echo app at ISTIO_ECHO_VERSION, with the
# user of Istio's own echo image.
ECHO_IMAGE ?= registry.k8s.io/gateway-api/echo-advanced:v1.5.1
ISTIO_ECHO_VERSION ?= v0.0.0-20260827124520-eed52ebb66ad
ECHO_DIR = $(CACHE)/istio-echo/$(ISTIO_ECHO_VERSION)
ECHO_IMAGE_SPEC = --image 'ref=$(ECHO_IMAGE),entrypoint=/usr/local/bin/server,user=1338,file=$(ECHO_DIR)/server:/usr/local/bin/server,file=$(ECHO_DIR)/client:/usr/local/bin/client,file=$(ECHO_DIR)/cert.crt:/cert.crt,file=$(ECHO_DIR)/cert.key:/cert.key'
export ISTIO_ECHO_VERSION

.PHONY: cluster-deps
cluster-deps: ## Install containerd, runc, the CNI plugins and iptables from Debian when missing.
	@hack/cluster-deps.sh

.PHONY: cluster-binaries
cluster-binaries: ## Build (or reuse) every Kubernetes binary the local cluster runs, and CoreDNS.
	@hack/build-k8s.sh $(CLUSTER_BINARIES) > /dev/null

# cert-manager, for config/default's webhook certificate in the end-to-end
# tests: hack/certmanager's controller and cainjector, one image, and the
# CRDs of the same module, which test/install.CertManager applies.
CERT_MANAGER_DIR := $(CACHE)/cert-manager/$(shell sed -n 's/^[[:space:]]*github.com\/cert-manager\/cert-manager \(v[^ ]*\)$$/\1/p' hack/certmanager/go.mod)
CERT_MANAGER_IMAGE = trellis.local/cert-manager:$(notdir $(CERT_MANAGER_DIR))
CERT_MANAGER_IMAGE_SPEC = --image 'ref=$(CERT_MANAGER_IMAGE),entrypoint=/cert-manager,user=65532,file=$(CERT_MANAGER_DIR)/cert-manager:/cert-manager'
export CERT_MANAGER_DIR CERT_MANAGER_IMAGE

.PHONY: cert-manager-binaries
cert-manager-binaries: ## Build (or reuse) cert-manager's controller and cainjector (hack/certmanager) and its CRDs.
	@hack/build-cert-manager.sh > /dev/null

.PHONY: echo-binaries
echo-binaries: ## Build (or reuse) Istio's echo server and client, which the conformance suite's echo image runs.
	@hack/build-echo.sh > /dev/null

# The images of the archive, one cmd/imagebuild --image each; `make
# conformance` adds the echo image to them.
IMAGE_SPECS = \
	--image 'ref=registry.k8s.io/pause:3.10,entrypoint=/pause,user=65535,go=./cmd/pause:/pause' \
	--image 'ref=$(IMAGE):$(VERSION),entrypoint=/usr/local/bin/manager,user=65532,go=.:/usr/local/bin/manager,go=./cmd/controlplane:/usr/local/bin/controlplane,go=./cmd/proxy:/usr/local/bin/proxy' \
	--image 'ref=trellis.local/coredns:$(COREDNS_VERSION),entrypoint=/coredns,user=65532,file=$(CACHE)/coredns/$(COREDNS_VERSION)/coredns:/coredns' \
	--image 'ref=ghcr.io/trellis-mesh/sample-temperature-api:$(VERSION),entrypoint=/usr/local/bin/temperature-api,user=65532,go=./test/sampleapp/cmd/temperature-api:/usr/local/bin/temperature-api' \
	--image 'ref=ghcr.io/trellis-mesh/sample-converter:$(VERSION),entrypoint=/usr/local/bin/converter,user=65532,go=./test/sampleapp/cmd/converter:/usr/local/bin/converter' \
	--image 'ref=ghcr.io/trellis-mesh/sample-loadgen:$(VERSION),entrypoint=/usr/local/bin/loadgen,user=65532,go=./test/sampleapp/cmd/loadgen:/usr/local/bin/loadgen'

IMAGEBUILD = go run ./cmd/imagebuild --ldflags "-X github.com/trellis-mesh/trellis/version.Version=$(VERSION) -X github.com/trellis-mesh/trellis/version.Image=$(IMAGE)"

.PHONY: images
images: cluster-binaries cert-manager-binaries ## Build every image (no Docker) into one OCI archive under ~/.cache/trellis/images; cert-manager's too.
	@mkdir -p $(dir $(IMAGES_ARCHIVE))
	$(IMAGEBUILD) --out $(IMAGES_ARCHIVE) $(IMAGE_SPECS) $(CERT_MANAGER_IMAGE_SPEC)

.PHONY: conformance-images
conformance-images: cluster-binaries echo-binaries ## The images and the conformance suite's echo image, into their own archive.
	@mkdir -p $(dir $(CONFORMANCE_ARCHIVE))
	$(IMAGEBUILD) --out $(CONFORMANCE_ARCHIVE) $(IMAGE_SPECS) $(ECHO_IMAGE_SPEC)

.PHONY: cluster-up
cluster-up: cluster-deps images ## Bring the local single-node cluster up (root), with every image loaded.
	go build -o $(LOCALBIN)/localcluster ./hack/localcluster
	$(LOCALBIN)/localcluster --bin "$$(hack/build-k8s.sh $(CLUSTER_BINARIES) | tail -n1)" --images $(IMAGES_ARCHIVE) up

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and undo every change it made to the host.
	go build -o $(LOCALBIN)/localcluster ./hack/localcluster
	$(LOCALBIN)/localcluster --bin "$$(hack/build-k8s.sh $(CLUSTER_BINARIES) | tail -n1)" down

.PHONY: test-e2e
test-e2e: cluster-deps images kustomize ## End-to-end tests on the local cluster: up, test/e2e, down, nothing left.
	@hack/install-chromium.sh > /dev/null
	TRELLIS_REQUIRE_CHROMIUM=1 hack/e2e.sh

##@ Build

.PHONY: build
build: ## Build the operator and the control plane into bin/.
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/manager .
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/controlplane ./cmd/controlplane

# kubectl runs any kubectl-<name> on the PATH as `kubectl <name>`, and asks
# kubectl_complete-<name> for its completions.
.PHONY: trellisctl
trellisctl: ## Build trellisctl into bin/, also as the kubectl plugin bin/kubectl-trellis (put bin/ on the PATH to run `kubectl trellis`).
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/trellisctl ./cmd/trellisctl
	ln -sf trellisctl $(LOCALBIN)/kubectl-trellis
	printf '#!/bin/sh\nexec kubectl-trellis __complete "$$@"\n' > $(LOCALBIN)/kubectl_complete-trellis
	chmod +x $(LOCALBIN)/kubectl_complete-trellis

.PHONY: run
run: manifests generate ## Run the operator against the cluster of the current kubeconfig.
	go run -ldflags "$(LDFLAGS)" . --webhook-port=0

.PHONY: demo
demo: cluster-up kustomize ## Trellis on a local single-node cluster: operator, Mesh, the sample app. Needs root.
	hack/demo.sh

.PHONY: install
install: manifests kustomize ## Install the CRDs into the cluster of the current kubeconfig.
	$(KUSTOMIZE) build config/crd | kubectl apply --server-side -f -

.PHONY: uninstall
uninstall: manifests kustomize ## Remove the CRDs from the cluster of the current kubeconfig.
	$(KUSTOMIZE) build config/crd | kubectl delete --ignore-not-found -f -

.PHONY: deploy
deploy: manifests kustomize ## Deploy the operator to the cluster of the current kubeconfig.
	$(KUSTOMIZE) build config/default | kubectl apply --server-side -f -

##@ Tools

.PHONY: controller-gen kustomize golangci-lint
controller-gen:
	@hack/go-install-tool.sh $(CONTROLLER_GEN) sigs.k8s.io/controller-tools/cmd/controller-gen $(CONTROLLER_GEN_VERSION)
kustomize:
	@hack/go-install-tool.sh $(KUSTOMIZE) sigs.k8s.io/kustomize/kustomize/v5 $(KUSTOMIZE_VERSION)
golangci-lint:
	@hack/go-install-tool.sh $(GOLANGCI_LINT) github.com/golangci/golangci-lint/v2/cmd/golangci-lint $(GOLANGCI_LINT_VERSION)

##@ Protocol buffers

.PHONY: proto
proto: ## Regenerate the control plane API's and the sample app's protobuf and gRPC code with pinned buf and plugins.
	hack/proto.sh

.PHONY: verify-proto
verify-proto: proto ## Fail when committed generated protobuf code is stale.
	@if [ -n "$$(git status --porcelain -- proto test/sampleapp)" ]; then \
		echo "proto/ or test/sampleapp has changes after 'make proto': the generated code is stale or not committed. Run 'make proto' and commit the result." >&2; \
		git status --porcelain -- proto test/sampleapp >&2; git --no-pager diff --stat -- proto test/sampleapp >&2; exit 1; \
	fi
	@echo "generated protobuf code is up to date"
