package dashboard_test

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trellis-mesh/trellis/controlplane/dashboard"
	"github.com/trellis-mesh/trellis/controlplane/traffic"
	"github.com/trellis-mesh/trellis/controlplane/traffic/traffictest"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/test/browser"
)

// How the test's API misbehaves (faultyAPI.mode).
const (
	apiOK          = iota
	apiError       // answers 503 with an ErrorResponse
	apiUnreachable // drops the connection without an answer
)

// faultyAPI is the Store's API, which the test can make fail.
type faultyAPI struct {
	h    http.Handler
	mode atomic.Int32
}

func (f *faultyAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch f.mode.Load() {
	case apiError:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(traffic.ErrorResponse{Error: "the store is restarting (test)"})
	case apiUnreachable:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	default:
		f.h.ServeHTTP(w, r)
	}
}

// The sample app's shape: loadgen calls the temperature API, which calls
// the converter (v1 and v2 behind one Service); a web front end in another
// namespace and a caller outside the mesh call the temperature API too.
var samplePods = map[[2]string]traffic.PodInfo{
	{"temperature", "loadgen-7d9f8-abcde"}:         {ServiceAccount: "loadgen", Workload: "loadgen", WorkloadKind: "Deployment"},
	{"temperature", "temperature-api-5c8b4-x1x1x"}: {ServiceAccount: "temperature-api", Workload: "temperature-api", WorkloadKind: "Deployment"},
	{"temperature", "temperature-api-5c8b4-x2x2x"}: {ServiceAccount: "temperature-api", Workload: "temperature-api", WorkloadKind: "Deployment"},
	{"temperature", "converter-v1-6f7c9-q1q1q"}:    {ServiceAccount: "converter", Workload: "converter-v1", WorkloadKind: "Deployment"},
	{"temperature", "converter-v2-8a1d2-r1r1r"}:    {ServiceAccount: "converter", Workload: "converter-v2", WorkloadKind: "Deployment"},
	{"temperature", "geo-55d6b-g1g1g"}:             {ServiceAccount: "geo", Workload: "geo", WorkloadKind: "Deployment"},
	{"frontend", "web-77c4d-w1w1w"}:                {ServiceAccount: "web", Workload: "web", WorkloadKind: "Deployment"},
}

// call is one direction of traffic for a test report.
type call struct {
	peerNS, peerSA, peerPod, service string
	requests, successes              uint64
}

func out(c call) *controlplanev1.TrafficRow {
	return withLatency(&controlplanev1.TrafficRow{
		Direction: controlplanev1.Direction_DIRECTION_OUTBOUND, PeerIdentity: "spiffe://" + trustDomain + "/ns/" + c.peerNS + "/sa/" + c.peerSA,
		PeerPod: c.peerPod, Service: c.service, Mtls: true, Requests: c.requests, Successes: c.successes,
		RequestBytes: 64 * c.requests, ResponseBytes: 256 * c.requests,
	}, 5, 50)
}

func in(c call) *controlplanev1.TrafficRow {
	id := ""
	if c.peerSA != "" {
		id = "spiffe://" + trustDomain + "/ns/" + c.peerNS + "/sa/" + c.peerSA
	}
	return withLatency(&controlplanev1.TrafficRow{
		Direction: controlplanev1.Direction_DIRECTION_INBOUND, PeerIdentity: id, Mtls: id != "",
		Requests: c.requests, Successes: c.successes,
		RequestBytes: 64 * c.requests, ResponseBytes: 256 * c.requests,
	}, 2, 20)
}

// mergedEdge is what the page should draw for a pair of nodes, computed
// here from the API's answer (the page merges the API's edges by mTLS and
// Service the same way).
type mergedEdge struct {
	requests, succeeded, rps, p99 float64
	hasP99                        bool
}

func mergeAPIEdges(edges []traffic.Edge) map[[2]string]*mergedEdge {
	out := map[[2]string]*mergedEdge{}
	for _, e := range edges {
		src := e.Source.Namespace + "/" + e.Source.Workload
		if e.Source.Workload == "" {
			src = "unmeshed:" + e.Source.Namespace
		}
		dst := e.Destination.Namespace + "/" + e.Destination.Workload
		k := [2]string{src, dst}
		m := out[k]
		if m == nil {
			m = &mergedEdge{}
			out[k] = m
		}
		m.requests += float64(e.Requests)
		m.rps += e.RPS
		if e.SuccessRate != nil {
			m.succeeded += *e.SuccessRate * float64(e.Requests)
		}
		if e.LatencyMs != nil {
			m.p99 = math.Max(m.p99, e.LatencyMs.P99)
			m.hasP99 = true
		}
	}
	return out
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

var stateColor = map[string]string{
	dashboard.StateOK: dashboard.ColorOK, dashboard.StateWarn: dashboard.ColorWarn,
	dashboard.StateFail: dashboard.ColorFail, dashboard.StateNone: dashboard.ColorNone,
}

// checkGraph compares the page's edges with the API's answer: the same
// pairs, the same numbers, the state the documented thresholds give and
// its colour. It returns the page's edges by source and destination.
func checkGraph(t *testing.T, d *browser.Dashboard, apiURL, query string) map[[2]string]browser.DashboardEdge {
	t.Helper()
	api := traffictest.GetJSON[traffic.EdgesResponse](t, apiURL+traffic.PathEdges+"?"+query)
	want := mergeAPIEdges(api.Edges)
	page, err := d.Edges()
	if err != nil {
		t.Fatal(err)
	}
	got := map[[2]string]browser.DashboardEdge{}
	for _, e := range page {
		got[[2]string{e.Source, e.Destination}] = e
	}
	for k, w := range want {
		e, ok := got[k]
		if !ok {
			t.Errorf("the graph lacks the edge %s → %s, which the API has", k[0], k[1])
			continue
		}
		rate := w.succeeded / w.requests
		if e.Requests != uint64(w.requests) || !near(e.RPS, w.rps) || e.SuccessRate == nil || !near(*e.SuccessRate, rate) {
			t.Errorf("edge %s → %s: the page has %d requests, %v rps, success %v; the API %v, %v, %v",
				k[0], k[1], e.Requests, e.RPS, deref(e.SuccessRate), w.requests, w.rps, rate)
		}
		if !w.hasP99 || e.P99Ms == nil || !near(*e.P99Ms, w.p99) {
			t.Errorf("edge %s → %s: the page's p99 is %v ms, the API's %v ms", k[0], k[1], deref(e.P99Ms), w.p99)
		}
		if st := dashboard.State(&rate); e.State != st {
			t.Errorf("edge %s → %s at %.4f success: data-state %s, want %s", k[0], k[1], rate, e.State, st)
		}
		if c := browser.RGB(stateColor[e.State]); e.Stroke != c {
			t.Errorf("edge %s → %s (%s) is drawn %s, want %s", k[0], k[1], e.State, e.Stroke, c)
		}
		if !strings.Contains(e.Label, "rps") || !strings.Contains(e.Label, "p99") {
			t.Errorf("edge %s → %s: label %q does not say rps and p99", k[0], k[1], e.Label)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("the graph has an edge %s → %s that the API does not", k[0], k[1])
		}
	}
	return got
}

func deref(f *float64) any {
	if f == nil {
		return nil
	}
	return *f
}

func screenshot(t *testing.T, b *browser.Browser, name string) {
	t.Helper()
	path, err := b.Screenshot(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// TestGraph runs the page in Chromium against a Store fed over the
// TelemetryService by the sample app's proxies: the graph shows the
// workloads and calls with the API's numbers, the converter failing half
// its requests is a red edge, new reports show up without a reload, and
// an API failure is said while the last graph stays.
func TestGraph(t *testing.T) {
	b := browser.Launch(t)
	cp := startControlPlane(t, clockStart())
	api := &faultyAPI{h: cp.Store.Handler()}
	mux := http.NewServeMux()
	dashboard.Register(mux)
	mux.Handle("/api/v1/", api)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	loadgen := cp.Proxy(t, "temperature", "loadgen-7d9f8-abcde")
	web := cp.Proxy(t, "frontend", "web-77c4d-w1w1w")
	api1 := cp.Proxy(t, "temperature", "temperature-api-5c8b4-x1x1x")
	api2 := cp.Proxy(t, "temperature", "temperature-api-5c8b4-x2x2x")
	conv1 := cp.Proxy(t, "temperature", "converter-v1-6f7c9-q1q1q")
	conv2 := cp.Proxy(t, "temperature", "converter-v2-8a1d2-r1r1r")
	geo := cp.Proxy(t, "temperature", "geo-55d6b-g1g1g")
	all := []*traffictest.Proxy{loadgen, web, api1, api2, conv1, conv2, geo}

	// Interval 1: loadgen's calls succeed at 97% (warn), the front end's
	// all (ok), converter-v2 fails half of what it gets (fail).
	svcAPI, svcConv := "temperature/temperature-api", "temperature/converter"
	loadgen.Report(
		out(call{"temperature", "temperature-api", "temperature-api-5c8b4-x1x1x", svcAPI, 200, 194}),
		out(call{"temperature", "temperature-api", "temperature-api-5c8b4-x2x2x", svcAPI, 200, 194}))
	web.Report(out(call{"temperature", "temperature-api", "temperature-api-5c8b4-x1x1x", svcAPI, 100, 100}))
	for i, p := range []*traffictest.Proxy{api1, api2} {
		rows := []*controlplanev1.TrafficRow{
			out(call{"temperature", "converter", "converter-v1-6f7c9-q1q1q", svcConv, 150, 150}),
			out(call{"temperature", "converter", "converter-v2-8a1d2-r1r1r", svcConv, 150, 75}),
			in(call{peerNS: "temperature", peerSA: "loadgen", requests: 200, successes: 194}),
		}
		if i == 0 {
			rows = append(rows, in(call{peerNS: "frontend", peerSA: "web", requests: 100, successes: 100}),
				in(call{requests: 60, successes: 60})) // outside the mesh
		}
		p.Report(rows...)
	}
	conv1.Report(in(call{peerNS: "temperature", peerSA: "temperature-api", requests: 300, successes: 300}))
	conv2.Report(in(call{peerNS: "temperature", peerSA: "temperature-api", requests: 300, successes: 150}))
	geo.Report()
	cp.Settle(t, all...)

	d, err := browser.OpenDashboard(b, srv.URL+"/", 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WaitGraph(5, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	edges := checkGraph(t, d, srv.URL, "window=1m")
	if len(edges) != 5 {
		t.Errorf("the graph has %d edges, want 5 (outside→api, loadgen→api, web→api, api→converter-v1, api→converter-v2)", len(edges))
	}
	failing := edges[[2]string{"temperature/temperature-api", "temperature/converter-v2"}]
	if failing.SuccessRate == nil || *failing.SuccessRate != 0.5 || failing.State != dashboard.StateFail ||
		failing.Stroke != browser.RGB(dashboard.ColorFail) || !strings.Contains(failing.Label, "50.0%") || failing.Requests != 300 {
		t.Errorf("the converter-v2 edge, half of whose 300 requests failed, is %+v: want 300 requests, success 0.5, state fail, drawn %s, labelled 50.0%%",
			failing, browser.RGB(dashboard.ColorFail))
	}
	for k, st := range map[[2]string]string{
		{"temperature/loadgen", "temperature/temperature-api"}:      dashboard.StateWarn,
		{"frontend/web", "temperature/temperature-api"}:             dashboard.StateOK,
		{"unmeshed:", "temperature/temperature-api"}:                dashboard.StateOK,
		{"temperature/temperature-api", "temperature/converter-v1"}: dashboard.StateOK,
	} {
		if e := edges[k]; e.State != st {
			t.Errorf("edge %s → %s: state %q, want %s", k[0], k[1], e.State, st)
		}
	}
	if e := edges[[2]string{"temperature/loadgen", "temperature/temperature-api"}]; e.Requests != 400 || !near(e.RPS, 400.0/60) {
		t.Errorf("loadgen → temperature-api: %d requests at %v rps, want the 400 reported over the 1 min window (%v rps)", e.Requests, e.RPS, 400.0/60)
	}

	nodes, err := d.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	x := map[string]float64{}
	for _, n := range nodes {
		x[n.Key] = n.X
	}
	wantNodes := []string{"frontend/web", "temperature/converter-v1", "temperature/converter-v2", "temperature/loadgen", "temperature/temperature-api", "unmeshed:"}
	if keys := sortedKeys(x); !slices.Equal(keys, wantNodes) {
		t.Errorf("nodes %v, want %v", keys, wantNodes)
	}
	if !(x["temperature/loadgen"] < x["temperature/temperature-api"] && x["temperature/temperature-api"] < x["temperature/converter-v2"]) {
		t.Errorf("columns: loadgen at x=%v, temperature-api at %v, converter-v2 at %v: callers must be left of what they call",
			x["temperature/loadgen"], x["temperature/temperature-api"], x["temperature/converter-v2"])
	}

	workloads, err := d.TableRows("workloads-table")
	if err != nil {
		t.Fatal(err)
	}
	row := func(rows [][]string, col int, value string) []string {
		for _, r := range rows {
			if r[col] == value {
				return r
			}
		}
		t.Errorf("no row with %q in column %d of %v", value, col, rows)
		return make([]string, 10)
	}
	// Columns: state, namespace, workload, meshed pods, success, RPS, ...
	if r := row(workloads, 2, "temperature-api"); r[3] != "2" || r[0] != dashboard.StateWarn {
		t.Errorf("workload temperature-api: %v; want 2 meshed pods, state warn (it served 554 of 560)", r)
	}
	if r := row(workloads, 2, "converter-v2"); r[0] != dashboard.StateFail || r[4] != "50.0%" {
		t.Errorf("workload converter-v2: %v; want state fail, 50.0%%", r)
	}
	proxies, err := d.TableRows("proxies-table")
	if err != nil {
		t.Fatal(err)
	}
	if len(proxies) != len(all) {
		t.Errorf("the proxies table has %d rows, want %d: %v", len(proxies), len(all), proxies)
	}
	// Columns: state, namespace, pod, workload, version, cert, config, report, connected.
	if r := row(proxies, 2, "converter-v2-8a1d2-r1r1r"); r[4] != "v0.9.0-test" || !regexp.MustCompile(`^in 2[34] h \d+ min$`).MatchString(r[5]) || r[8] != "yes" {
		t.Errorf("proxy converter-v2: %v; want version v0.9.0-test, its 24 h certificate expiring in 23 or 24 h, connected", r)
	}
	screenshot(t, b, "dashboard-converter-failing")

	// Interval 2, live: the page picks up new reports without a reload.
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	loadgen.Report(out(call{"temperature", "temperature-api", "temperature-api-5c8b4-x1x1x", svcAPI, 400, 400}))
	api1.Report(out(call{"temperature", "geo", "geo-55d6b-g1g1g", "temperature/geo", 90, 90}),
		in(call{peerNS: "temperature", peerSA: "loadgen", requests: 400, successes: 400}))
	geo.Report(in(call{peerNS: "temperature", peerSA: "temperature-api", requests: 90, successes: 90}))
	for _, p := range []*traffictest.Proxy{web, api2, conv1, conv2} {
		p.Report()
	}
	cp.Settle(t, all...)
	if err := d.WaitEdge("temperature/temperature-api", "temperature/geo", dashboard.StateOK, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	after, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if after.Updates <= st.Updates || after.Status != "ok" {
		t.Errorf("status after new reports: %+v, before %+v", after, st)
	}
	edges = checkGraph(t, d, srv.URL, "window=1m")
	if e := edges[[2]string{"temperature/loadgen", "temperature/temperature-api"}]; e.Requests != 800 {
		t.Errorf("loadgen → temperature-api after the second interval: %d requests, want 800", e.Requests)
	}
	screenshot(t, b, "dashboard-live-update")

	// The API fails: the page says so and keeps the last graph.
	before, err := d.Edges()
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []struct {
		mode    int32
		name    string
		message string
	}{
		{apiError, "error", "503"},
		{apiUnreachable, "unreachable", "unreachable"},
	} {
		st, err := d.Status()
		if err != nil {
			t.Fatal(err)
		}
		api.mode.Store(mode.mode)
		if err := d.WaitErrors(st.Errors, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		failed, err := d.Status()
		if err != nil {
			t.Fatal(err)
		}
		if failed.Status != "error" || !strings.Contains(failed.Error, mode.message) || !strings.Contains(failed.Error, "Showing the data of") {
			t.Errorf("API %s: status %q, message %q; want error, a message with %q that says what is shown", mode.name, failed.Status, failed.Error, mode.message)
		}
		if mode.mode == apiError && !strings.Contains(failed.Error, "the store is restarting (test)") {
			t.Errorf("API error: the message %q does not pass on the API's own error", failed.Error)
		}
		kept, err := d.Edges()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(before, kept); diff != "" {
			t.Errorf("API %s: the graph changed (-before +now); it should keep the last data:\n%s", mode.name, diff)
		}
		screenshot(t, b, "dashboard-api-"+mode.name)
	}
	api.mode.Store(apiOK)
	if err := d.WaitFor(`document.body.dataset.status === 'ok' && document.getElementById('error').hidden`, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// The selectors ask the API for one namespace's edges and another
	// window, and the page says so in its address.
	if err := d.Select("namespace", "frontend", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if edges := checkGraph(t, d, srv.URL, "namespace=frontend&window=1m"); len(edges) != 1 {
		t.Errorf("namespace frontend: %d edges, want 1 (web → temperature-api)", len(edges))
	}
	if err := d.Select("window", "5m", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	edges = checkGraph(t, d, srv.URL, "namespace=frontend&window=5m")
	if e := edges[[2]string{"frontend/web", "temperature/temperature-api"}]; e.Requests != 100 || !near(e.RPS, 100.0/300) {
		t.Errorf("web → temperature-api over 5 min: %d requests at %v rps, want 100 at %v", e.Requests, e.RPS, 100.0/300)
	}
	if loc, err := browser.Eval[string](b, `location.search`); err != nil || loc != "?namespace=frontend&window=5m" {
		t.Errorf("the page's address says %q (%v), want ?namespace=frontend&window=5m", loc, err)
	}
	if errs := b.JSErrors(); len(errs) > 0 {
		t.Errorf("the page's errors: %v", errs)
	}
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
