// Package balance picks one of a Service's endpoints for each request or
// connection: by default the cheaper of two random endpoints, where cost is
// a peak-EWMA latency estimate times the requests in flight (power of two
// choices, as Finagle and Linkerd do), or round robin or random when the
// TrafficPolicy asks. Endpoints that could not be connected to are skipped
// for an exponentially growing, jittered backoff.
//
// A Balancer is on the hot path of every request: Pick and Done take no
// lock and allocate nothing, and the endpoint set is an immutable slice
// behind an atomic pointer, replaced whole by Update when discovery sends a
// new one.
//
// It does not dial, retry, time out, eject outliers or know about zones:
// those are the layers around it, which tell it how each pick went.
package balance
