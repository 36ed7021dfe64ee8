// Package latency is the request-duration histogram that the proxies report
// to the control plane and the control plane adds up across proxies, time
// buckets and replicas: its bucket bounds, the bucket of a duration (on the
// proxy's request path: no allocation, no lock) and its percentiles.
//
// The buckets are log-linear: BucketsPerOctave per doubling, from about
// 0.1 ms to about 60 s, so that a percentile read from any histogram is
// within RelativeError of the true one, wherever the requests cluster.
// Prometheus' histogram of the proxy (proxy/dataplane) keeps its own coarse
// buckets: that layout is a contract of dashboards and alerts; this one is
// only the report's.
//
// It must stay a leaf: the proxy and the control plane both import it, and
// neither imports the other.
package latency
