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
	@for k in config/default config/without-cert-manager config/crd config/rbac config/samples; do \
		$(KUSTOMIZE) build $$k > /dev/null || { echo "kustomize build $$k failed" >&2; exit 1; }; \
	done
	@echo "kustomizations build"

##@ Test

.PHONY: test
test: verify-generated verify-kustomize vet lint test-go bench-operator ## Everything CI runs.

.PHONY: envtest-assets
envtest-assets: ## Build (or reuse) kube-apiserver, etcd and kubectl for the integration tests.
	@hack/build-k8s.sh kube-apiserver etcd kubectl > /dev/null

.PHONY: test-go
test-go: envtest-assets ## Unit and integration tests (a real kube-apiserver and etcd).
	KUBEBUILDER_ASSETS="$$(hack/build-k8s.sh kube-apiserver etcd kubectl | tail -n1)" \
		go test ./... -count=1 -timeout 20m

.PHONY: bench-operator
bench-operator: envtest-assets ## How long the operator takes from Mesh creation to its objects and to Ready.
	KUBEBUILDER_ASSETS="$$(hack/build-k8s.sh kube-apiserver etcd kubectl | tail -n1)" \
		go test ./controllers -run '^$$' -bench BenchmarkMesh -benchtime 5x -count=1

##@ Build

.PHONY: build
build: ## Build the operator and the control plane into bin/.
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/manager .
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/controlplane ./cmd/controlplane

.PHONY: run
run: manifests generate ## Run the operator against the cluster of the current kubeconfig.
	go run -ldflags "$(LDFLAGS)" . --webhook-port=0

.PHONY: demo
demo: build envtest-assets ## Start a local API server, run the operator, apply the sample Mesh, show what it made.
	KUBEBUILDER_ASSETS="$$(hack/build-k8s.sh kube-apiserver etcd kubectl | tail -n1)" go run ./hack/demo

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

##@ Sample app

.PHONY: proto
proto: ## Regenerate the sample app's protobuf and gRPC code (test/sampleapp) with pinned buf and plugins.
	hack/proto.sh

.PHONY: verify-proto
verify-proto: proto ## Fail when the sample app's committed generated code is stale.
	@if [ -n "$$(git status --porcelain -- test/sampleapp)" ]; then \
		echo "test/sampleapp has changes after 'make proto': the generated code is stale or not committed. Run 'make proto' and commit the result." >&2; \
		git status --porcelain -- test/sampleapp >&2; git --no-pager diff --stat -- test/sampleapp >&2; exit 1; \
	fi
	@echo "sample app generated code is up to date"
