// Package report sums up the proxy's traffic for the control plane: the
// data plane adds each request and opaque connection to a Row (atomic
// counters, resolved once per route and endpoint, so a request takes no
// lock), and the Reporter sends the rows' deltas every interval on a
// TelemetryService.Report stream.
//
// It must stay cheap and bounded: rows are capped, idle rows are retired,
// and a report that cannot be sent is dropped and counted, never queued.
// Prometheus' metrics (proxy/dataplane) stay the full record; this is the
// summary the control plane's API shows.
package report
