// Package inject decides whether a pod joins a Trellis mesh and, if it does,
// returns the pod with the mesh's sidecar added: the trellis-init container
// that redirects the pod's traffic, the trellis-proxy container, their
// volumes, the app's probes rewritten to pass through the proxy, and the
// labels and annotations that record what was added.
//
// Decide and Inject are pure and idempotent: they read only their arguments,
// never mutate them, and injecting an injected pod returns it unchanged. They
// must not talk to Kubernetes, read files or the clock: the admission handler
// (package webhooks) looks up the Namespace and the Mesh and passes them in,
// and trellisctl can inject manifests offline with the same code.
package inject
