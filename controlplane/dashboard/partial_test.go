package dashboard_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/controlplane/dashboard"
	"github.com/trellis-mesh/trellis/controlplane/traffic"
	"github.com/trellis-mesh/trellis/test/browser"
)

// TestPageAnswersForEveryReplica serves the page from one control plane
// replica while the proxies report to two: the page draws both replicas'
// traffic, and when the other replica stops answering it says so above
// the graph, naming it, and draws what is left.
func TestPageAnswersForEveryReplica(t *testing.T) {
	b := browser.Launch(t)
	start := clockStart()
	a, other := startControlPlane(t, start), startControlPlane(t, start)
	a.Store.SetPeers(func() ([]traffic.Peer, error) {
		return []traffic.Peer{{Name: "trellis-controlplane-b", URL: other.API.URL}}, nil
	})
	mux := http.NewServeMux()
	dashboard.Register(mux)
	mux.Handle("/api/v1/", a.Store.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	// loadgen's proxy reports to replica a; the temperature API's to b.
	loadgen := a.Proxy(t, "temperature", "loadgen-7d9f8-abcde")
	api := other.Proxy(t, "temperature", "temperature-api-5c8b4-x1x1x")
	loadgen.Report(out(call{"temperature", "temperature-api", "temperature-api-5c8b4-x1x1x", "temperature/temperature-api", 200, 200}))
	api.Report(
		out(call{"temperature", "converter", "converter-v1-6f7c9-q1q1q", "temperature/converter", 150, 150}),
		in(call{peerNS: "temperature", peerSA: "loadgen", requests: 200, successes: 200}))
	a.Settle(t, loadgen)
	other.Settle(t, api)

	d, err := browser.OpenDashboard(b, srv.URL+"/", 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// loadgen → temperature-api (a's) and temperature-api → converter-v1 (b's).
	if err := d.WaitGraph(2, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitEdge("temperature/temperature-api", "temperature/converter-v1", dashboard.StateOK, 5*time.Second); err != nil {
		t.Fatalf("replica b's edge is not drawn by the page replica a serves: %v", err)
	}
	if hidden, err := browser.Eval[bool](b, `document.getElementById('partial').hidden`); err != nil || !hidden {
		t.Errorf("the partial-answer warning shows (%v) while both replicas answer", err)
	}
	screenshot(t, b, "dashboard-two-replicas")

	other.API.Close()
	if err := d.WaitFor(`document.body.dataset.partial === 'true'`, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	msg, err := browser.Eval[string](b, `document.getElementById('partial').hidden ? '' : document.getElementById('partial').textContent`)
	if err != nil || !strings.Contains(msg, "trellis-controlplane-b") || !strings.Contains(msg, "did not answer") {
		t.Errorf("the page says %q (%v); want a warning naming replica trellis-controlplane-b", msg, err)
	}
	if err := d.WaitFor(`document.querySelectorAll('#graph g.edge').length === 1 &&
		document.querySelector('#graph g.edge[data-source="temperature/loadgen"]') !== null`, 10*time.Second); err != nil {
		t.Errorf("without replica b the graph should show a's one edge, loadgen → temperature-api: %v", err)
	}
	if st, err := d.Status(); err != nil || st.Status != "ok" {
		t.Errorf("status %+v (%v): a partial answer is not an error", st, err)
	}
	screenshot(t, b, "dashboard-partial")
	if errs := b.JSErrors(); len(errs) > 0 {
		t.Errorf("the page's errors: %v", errs)
	}
}
