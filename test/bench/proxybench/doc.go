// Command proxybench measures what a proxy adds to an HTTP/1.1 request on
// this machine, against HAProxy under the same load, and prints one table
// from one run (`make bench-proxy`; run as root).
//
// A client and a server live in two network namespaces made for the run,
// joined by veths to a bridge in a third, as two pods on one node. Every
// row sends the same load at the same server, a small Go HTTP server in this
// program that answers with 1024-byte bodies: first at a fixed rate (fortio,
// for latency percentiles, and the proxies' CPU and memory), then as fast as
// it can (wrk, closed loop, for the maximum rate). A row's proxies stand
// where sidecars would: one hop is a proxy in the client's namespace on
// 127.0.0.1; two hops add one in the server's namespace, with TLS between
// the two over the bridge.
//
// The Trellis rows (trellis.go) mesh the client's pod, and for two hops the
// server's, as the injector would: proxy init's nftables rules in the pod's
// namespace and proxy run as the proxy's UID, against Trellis's control
// plane (test/meshnet: kube-apiserver and etcd from KUBEBUILDER_ASSETS, the
// mesh CA, the control plane binary), which the first of them starts on the
// host. For it they link the host to the bridge, as 10.79.0.1, and give the
// client and the server a default route through it; the load still goes to
// the server only.
//
// The rows are scenario values (scenarios.go). It starts and stops only its
// own processes, by PID, and removes its namespaces, and the Trellis rows'
// link and control plane, on exit, on Ctrl-C and on failure. Apart from
// that link, the host's own network namespace is never touched.
//
//	go run ./test/bench/proxybench -fortio bin/fortio [-duration 3s] [-scenarios 'direct,haproxy 1 hop'] [-pprof]
package main
