// Package manifests holds the sample app's Kubernetes manifests (apply them
// with `kubectl apply -k test/sampleapp/manifests`) and embeds them, so the
// end-to-end tests can apply them from Go without a path to the source tree.
//
// The manifests carry nothing of the mesh: the namespace is not labeled for
// injection, and no pod asks for a sidecar. Each test decides.
package manifests
