// Package proxy is the sidecar: the traffic redirection that trellis-init
// writes into a pod's network namespace, and the proxy that trellis-proxy
// runs on the redirected ports with its admin endpoint.
//
// The parts are subpackages with one job each, composed once by cmd/proxy:
//
//	redirect      the nftables rules of proxy init, as a plan and its netlink apply
//	forward       the outbound and inbound listeners: accept, SO_ORIGINAL_DST, splice, drain
//	dataplane     what a connection becomes: detection, discovery, routes,
//	              balancing, mutual TLS, HTTP request by request
//	detect        the protocol of a connection's first bytes; a TLS ClientHello's ALPN
//	balance       endpoint choice: power of two choices on peak EWMA, connect backoff
//	identity      the workload certificate from the control plane, the trust
//	              bundle, and the TLS configurations of mutual TLS
//	destinations  the control plane's discovery streams, kept through its outages
//	tracing       W3C trace context and B3, a span per request, OTLP/gRPC export
//	admin         /ready, /live, /metrics, /shutdown, pprof and the app probe relay
//	appprobe      the app's original probes, run as the kubelet would run them
package proxy
