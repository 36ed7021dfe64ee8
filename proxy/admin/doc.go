// Package admin is the proxy's HTTP endpoint on the admin port (15020),
// which trellis-init never redirects: /ready and /live for the kubelet's
// probes of the proxy, /metrics for Prometheus, /app-health/... to relay the
// app's own probes (see package appprobe), and /shutdown for apps (Jobs)
// that must stop their proxy when they are done.
//
// It reports state that others own; it must not start or stop the proxy's
// listeners itself, only ask through the Shutdown function it is given.
package admin
