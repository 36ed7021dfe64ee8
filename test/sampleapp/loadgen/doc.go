// Package loadgen sends HTTP GET requests at a fixed rate for a fixed time
// and sums up what came back: how many succeeded, latency percentiles, and
// counts by status code and by the converter version that answered (the
// temperature API's "converter" field), so the mesh's end-to-end tests can
// measure retries, timeouts and canary splits.
//
// Its load is bounded by construction: rate × duration requests at most, no
// more than the concurrency in flight, none issued after the duration.
package loadgen
