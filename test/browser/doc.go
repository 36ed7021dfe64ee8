// Package browser drives headless Chromium (Debian's chromium, installed by
// hack/install-chromium.sh) from Go tests over the DevTools protocol, and
// knows the mesh dashboard's page (controlplane/dashboard): how to wait for
// its graph, read its edges and nodes, and take screenshots into
// _output/screenshots.
//
// It is shared by the dashboard's own tests and the end-to-end test that
// opens the page on the local cluster. A test without chromium is skipped,
// unless TRELLIS_REQUIRE_CHROMIUM is set (make test-dashboard sets it): then
// it fails. It talks only to the URLs a test gives it; the browser starts
// with a fresh profile and no network access of its own (no updates, no
// safe browsing).
package browser
