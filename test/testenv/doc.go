// Package testenv starts a real kube-apiserver and etcd for integration tests
// (controller-runtime's envtest) with Trellis's CRDs and those it works with
// (cert-manager's) installed. The binaries come from hack/build-k8s.sh, which
// `make test` runs; KUBEBUILDER_ASSETS points at them.
//
// It is for tests only.
package testenv
