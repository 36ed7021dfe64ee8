// Package traffic keeps the golden metrics the proxies report (requests,
// success, latency, bytes per source, destination and route) in a bounded
// window in memory and serves them as JSON on the control plane's HTTP port.
//
// It owns the TelemetryService's server side, the Store and the API types
// (api.go), which trellisctl and the web page import. It must not grow
// without bound: rows and buckets are capped and what is over the cap is
// counted and dropped. It does not persist anything; a restarted replica
// starts empty. Each proxy reports to the one replica it is connected to,
// so each Store knows only those proxies; the API answers for the whole
// mesh by asking the other ready replicas for theirs (mesh.go) and adding
// them up exactly.
package traffic
