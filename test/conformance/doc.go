// Package conformance runs the Gateway API's conformance suite for meshes
// (module sigs.k8s.io/gateway-api/conformance, profiles MESH-HTTP and
// MESH-GRPC) against Trellis on the local cluster, and writes the suite's
// report. `make conformance` builds the images (the suite's echo image from
// Istio's echo app among them), brings the cluster up, runs this package
// and brings the cluster down; TestMain installs the Gateway API's CRDs, the
// operator from the OLM bundle as OLM would (install.OperatorFromBundle)
// and the sample Mesh first.
//
// The suite's Setup is not called: in v1.6.0, when the Mesh feature is
// claimed, it waits for ready pods in gateway-conformance-app-backend and
// gateway-conformance-web-backend, which only its Gateway manifests create,
// so a mesh-only run times out there. The test does the mesh half of Setup
// itself: it applies mesh/manifests.yaml and waits for the pods of its two
// namespaces. v1.6.3 fixes Setup (kubernetes-sigs/gateway-api#4934); from
// that version on, the test can call RunConformanceWithOptions instead.
//
// The tests need KUBECONFIG, KUBECTL and KUSTOMIZE set, as
// hack/with-cluster.sh sets them. The suite's own flags go after -args:
// --report-output=FILE, and for a narrower run --run-test=NAME,
// --skip-tests=A,B or --supported-features=A,B (which replaces the list in
// claimedFeatures).
package conformance
