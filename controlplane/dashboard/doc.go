// Package dashboard is the mesh's web page: the service graph and the
// per-workload, per-edge and per-proxy tables, drawn in the browser from the
// control plane's traffic API (package traffic, /api/v1/...), which it polls
// every two seconds.
//
// It owns only static files (HTML, CSS and plain JavaScript, embedded in the
// binary) and the handler that serves them. It must not load anything from
// another host: neither the cluster nor the test machine reaches the
// internet, and a page served through a port-forward may be opened anywhere.
// It reads the API by relative URLs, so that it works at the root of the
// control plane's HTTP port and under a prefix (kubectl proxy's service
// path) alike.
package dashboard
