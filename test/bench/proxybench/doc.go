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
// The rows are scenario values (scenarios.go). It starts and stops only its
// own processes, by PID, and removes its namespaces on exit, on Ctrl-C and
// on failure; the host's own network namespace is never touched. All its
// traffic stays inside the namespaces it made.
//
//	go run ./test/bench/proxybench -fortio bin/fortio [-duration 3s] [-scenarios 'direct,haproxy 1 hop']
package main
