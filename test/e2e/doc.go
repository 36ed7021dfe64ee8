// Package e2e tests Trellis on a real single-node cluster that
// hack/localcluster brings up on this machine: real kubelet, containerd and
// pods, images built by the project. `make test-e2e` (part of `make test`)
// brings the cluster up, runs these tests and brings it down, checking that
// nothing is left on the host.
//
// The tests need KUBECONFIG and KUBECTL set, as hack/e2e.sh sets them; with
// neither they fail, saying so.
package e2e
