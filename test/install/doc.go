// Package install puts Trellis on a running cluster the way its README tells
// a user to, with kubectl and kustomize: the Gateway API's route CRDs, the
// operator from config/without-cert-manager, the sample Mesh. Each step
// waits until what it installed works, and its error says what was seen.
//
// It is for the tests that run on the local cluster (test/conformance); it
// must not bring the cluster up or down, which hack/with-cluster.sh does.
package install
