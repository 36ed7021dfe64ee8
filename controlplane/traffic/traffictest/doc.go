// Package traffictest starts the control plane's traffic path on loopback
// for the tests of the packages that read it (traffic itself, trellisctl's
// traffic commands, the dashboard): a real traffic.Store on a clock the test
// moves, its TelemetryService on the control plane's own gRPC server and
// mutual TLS (controlplane.Server, with a signer of a test CA), its HTTP API
// on an httptest server, and proxies played by gRPC clients that hold
// workload certificates of that CA and send ReportRequests.
//
// It is for tests only (it imports testing) and must stay real: no fake of
// gRPC, TLS, the Store or its handler, so that what a test asserts through
// it is what a proxy and a user would see. Everything it starts ends with
// the test, through t.Cleanup.
package traffictest
