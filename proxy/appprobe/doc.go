// Package appprobe runs an app's original HTTP, TCP and gRPC probes from
// inside its pod, as the kubelet would run them from the node.
//
// The injector rewrites the app's probes to HTTP GETs of the proxy's admin
// port (see inject.AppProbes for why they cannot reach the app directly);
// the admin server hands each to a Prober, which must judge it as the
// kubelet does: the same success codes, the same redirect rules, TLS
// without verification, the host defaulting to the pod's IP. A probe that
// passes here and would fail from the kubelet, or the reverse, is a bug.
//
// The probes reach the proxy as the JSON of Kubernetes' ProbeHandlers,
// which ParseProbes decodes into this package's own types. It must not
// import Kubernetes' packages: the proxy would link them, and every sidecar
// would carry them in memory.
package appprobe
