// Package install puts Trellis on a running cluster the way its README tells
// a user to, with kubectl and kustomize: the Gateway API's route CRDs,
// cert-manager, the operator from config/default or
// config/without-cert-manager (or from the OLM bundle, as OLM would), the
// sample Mesh. Each step
// waits until what it installed works, and its error says what was seen.
//
// It is for the tests that run on the local cluster (test/e2e,
// test/conformance); it
// must not bring the cluster up or down, which hack/with-cluster.sh does.
package install
