package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/controlplane/traffic"
	"github.com/trellis-mesh/trellis/controlplane/traffic/traffictest"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// replicaServer is a control plane replica's traffic API on loopback: it
// answers the API's paths with the JSON it is given, checks the query
// parameters as the API does, and records what it was asked.
type replicaServer struct {
	*httptest.Server
	stat    map[string]traffic.StatResponse // by the by parameter
	top     traffic.TopResponse
	edges   traffic.EdgesResponse
	proxies []traffic.ProxyStatus

	mu      sync.Mutex
	queries []url.Values
}

func newReplica(t *testing.T) *replicaServer {
	t.Helper()
	r := &replicaServer{stat: map[string]traffic.StatResponse{}}
	mux := http.NewServeMux()
	bad := func(w http.ResponseWriter, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(traffic.ErrorResponse{Error: msg})
	}
	answer := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	checkWindow := func(w http.ResponseWriter, q url.Values) bool {
		if s := q.Get("window"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d < traffic.MinWindow || d > traffic.MaxWindow {
				bad(w, "window "+s+" is out of bounds")
				return false
			}
		}
		return true
	}
	record := func(req *http.Request) url.Values {
		q := req.URL.Query()
		q.Set("path", req.URL.Path)
		r.mu.Lock()
		r.queries = append(r.queries, q)
		r.mu.Unlock()
		return q
	}
	mux.HandleFunc("GET "+traffic.PathStat, func(w http.ResponseWriter, req *http.Request) {
		q := record(req)
		if !checkWindow(w, q) {
			return
		}
		resp, ok := r.stat[q.Get("by")]
		if !ok {
			bad(w, "by "+q.Get("by")+": use workload, service or route")
			return
		}
		answer(w, filterNamespace(resp, q.Get("namespace")))
	})
	mux.HandleFunc("GET "+traffic.PathTop, func(w http.ResponseWriter, req *http.Request) {
		if q := record(req); checkWindow(w, q) {
			answer(w, r.top)
		}
	})
	mux.HandleFunc("GET "+traffic.PathEdges, func(w http.ResponseWriter, req *http.Request) {
		if q := record(req); checkWindow(w, q) {
			answer(w, r.edges)
		}
	})
	mux.HandleFunc("GET "+traffic.PathProxies, func(w http.ResponseWriter, req *http.Request) {
		record(req)
		answer(w, r.proxies)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("<!doctype html><title>Trellis</title>"))
	})
	r.Server = httptest.NewServer(mux)
	t.Cleanup(r.Close)
	return r
}

func filterNamespace(resp traffic.StatResponse, ns string) traffic.StatResponse {
	if ns == "" {
		return resp
	}
	out := traffic.StatResponse{Window: resp.Window, Rows: []traffic.StatRow{}}
	for _, r := range resp.Rows {
		if r.Namespace == ns {
			out.Rows = append(out.Rows, r)
		}
	}
	return out
}

func (r *replicaServer) lastQuery() url.Values {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queries) == 0 {
		return nil
	}
	return r.queries[len(r.queries)-1]
}

// syncBuffer is a bytes.Buffer that a running command writes while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// run runs trellisctl with args, as the binary named argv0, and returns
// what it printed.
func run(t *testing.T, argv0 string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runContext(context.Background(), t, argv0, args...)
}

func runContext(ctx context.Context, t *testing.T, argv0 string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut syncBuffer
	cmd := newRootCommand(argv0, strings.NewReader(""), &out, &errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// noCluster keeps a command from finding a kubeconfig on the test machine.
func noCluster(t *testing.T) string {
	return "--kubeconfig=" + t.TempDir() + "/none"
}

func ptr[T any](v T) *T { return &v }

// fields splits a table's lines into their cells.
func fields(out string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rows = append(rows, regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(l), -1))
	}
	return rows
}

// Each proxy reports to one control plane replica, and each replica
// answers for the whole mesh: trellisctl asks one, whichever, and gets
// every replica's traffic, with exact percentiles; when a replica is down
// it says so.
func TestStatAnswersForEveryReplica(t *testing.T) {
	start := time.Now().Truncate(traffic.BucketWidth)
	a := traffictest.Start(t, traffictest.Options{Pods: temperaturePods, Start: start})
	b := traffictest.Start(t, traffictest.Options{Pods: temperaturePods, Start: start})
	a.Store.SetPeers(func() ([]traffic.Peer, error) { return []traffic.Peer{{Name: "cp-b", URL: b.API.URL}}, nil })
	b.Store.SetPeers(func() ([]traffic.Peer, error) { return []traffic.Peer{{Name: "cp-a", URL: a.API.URL}}, nil })
	apiID := "spiffe://cluster.local/ns/temperature/sa/temperature-api"
	served := func(n, ok uint64, ms float64) *controlplanev1.TrafficRow {
		row := &controlplanev1.TrafficRow{Direction: controlplanev1.Direction_DIRECTION_INBOUND, PeerIdentity: apiID, Mtls: true,
			Requests: n, Successes: ok, RequestBytes: n, ResponseBytes: 5 * n}
		row.LatencyBuckets, row.LatencyBucketCounts = latencies(n, ms)
		return row
	}
	// Over 10 s the converter's two pods served 600 and 1200 requests of
	// 51 ms, and 50 and 20 of 400 ms; q1 reports to replica a, q2 to b.
	conv1, conv2 := a.Proxy(t, "temperature", "converter-5f6b-q1"), b.Proxy(t, "temperature", "converter-5f6b-q2")
	conv1.Report(served(600, 300, 51), served(50, 50, 400))
	conv2.Report(served(1200, 960, 51), served(20, 20, 400))
	a.Settle(t, conv1)
	b.Settle(t, conv2)

	want := [][]string{
		{"NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN"},
		// 1330 of 1870 succeeded; 70 of 1870 (3.7%) took 400 ms: p95 is
		// 51 ms, p99 400 ms, within the histogram's 4.3% (51.49 and 412).
		{"converter", "2", "71.12%", "31.2rps", "51ms", "51ms", "412ms", "0"},
	}
	for _, cp := range []*traffictest.ControlPlane{a, b} {
		out, errOut, err := run(t, "trellisctl", "stat", "-n", "temperature", "--control-plane-url="+cp.API.URL, noCluster(t))
		if err != nil {
			t.Fatal(err)
		}
		if got := fields(out); !equalRows(got, want) || errOut != "" {
			t.Errorf("stat through %s printed\n%s\n%s\nwant rows %q", cp.API.URL, out, errOut, want)
		}
	}

	out, _, err := run(t, "trellisctl", "stat", "-n", "temperature", "-o", "json", "--control-plane-url="+a.API.URL, noCluster(t))
	if err != nil {
		t.Fatal(err)
	}
	var resp traffic.StatResponse
	if err := json.Unmarshal([]byte(out), &resp); err != nil || len(resp.Rows) != 1 {
		t.Fatalf("-o json (%v):\n%s", err, out)
	}
	conv := resp.Rows[0]
	if conv.Requests != 1870 || conv.MeshedPods != 2 || conv.LatencyHistogram == nil || len(conv.LatencyHistogram.Counts) != 2 ||
		conv.LatencyHistogram.Counts[0] != 1800 || resp.Partial || len(resp.Replicas) != 2 || resp.Replicas[1].Name != "cp-b" {
		t.Errorf("json: %+v %+v", resp, conv.LatencyHistogram)
	}

	// Replica b goes away: a answers with its own proxies (q1's 350 of
	// 650), and says so.
	b.API.Close()
	out, errOut, err := run(t, "trellisctl", "stat", "-n", "temperature", "--control-plane-url="+a.API.URL, noCluster(t))
	if err != nil {
		t.Fatal(err)
	}
	if rows := fields(out); len(rows) != 2 || strings.Join(rows[1][:3], " ") != "converter 1 53.85%" ||
		!strings.HasPrefix(errOut, "Warning: Partial answer: control plane replica cp-b (") || !strings.Contains(errOut, "is missing") {
		t.Errorf("stat without replica b printed\n%s\n%s", out, errOut)
	}
	_, errOut, err = run(t, "trellisctl", "proxy-status", "-n", "temperature", "--control-plane-url="+a.API.URL, noCluster(t))
	if err != nil || !strings.Contains(errOut, "Warning: Partial answer") {
		t.Errorf("proxy-status without replica b: %v, stderr %q", err, errOut)
	}
}

func equalRows(got, want [][]string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if strings.Join(got[i], "|") != strings.Join(want[i], "|") {
			return false
		}
	}
	return true
}

func TestStatKindsAndNames(t *testing.T) {
	r := newReplica(t)
	r.stat[traffic.KindService] = traffic.StatResponse{Window: "5m0s", Rows: []traffic.StatRow{
		{Kind: "service", Namespace: "shop", Name: "converter", MeshedPods: 2, Requests: 10, RPS: 0.1, SuccessRate: ptr(0.9)},
		{Kind: "service", Namespace: "shop", Name: "web", MeshedPods: 1, Requests: 10, RPS: 0.1, SuccessRate: ptr(1.0)},
	}}
	r.stat[traffic.KindRoute] = traffic.StatResponse{Window: "1m0s", Rows: []traffic.StatRow{}}
	url := "--control-plane-url=" + r.URL
	for name, tc := range map[string]struct {
		args    []string
		by      string // the by parameter asked for; "" when nothing is asked
		wantOut string // in stdout
		wantErr string
	}{
		"svc with a name": {args: []string{"stat", "svc", "web", "-n", "shop", "--window", "5m"}, by: "service", wantOut: "web"},
		"--by service":    {args: []string{"stat", "--by", "services", "-n", "shop"}, by: "service", wantOut: "converter"},
		"route, none":     {args: []string{"stat", "httproute", "-n", "shop"}, by: "route"},
		"unknown kind":    {args: []string{"stat", "pods"}, wantErr: `"pods" is not a kind stat knows`},
		"disagreement":    {args: []string{"stat", "svc", "--by", "route"}, wantErr: "disagree"},
		"bad window":      {args: []string{"stat", "--window", "10m"}, wantErr: "between 10s and 5m0s"},
		"name not found":  {args: []string{"stat", "svc", "nope", "-n", "shop"}, by: "service", wantErr: "no traffic of service nope"},
		"bad output":      {args: []string{"stat", "-o", "yaml"}, wantErr: `--output "yaml"`},
	} {
		t.Run(name, func(t *testing.T) {
			r.mu.Lock()
			r.queries = nil
			r.mu.Unlock()
			out, _, err := run(t, "trellisctl", append(tc.args, url, noCluster(t))...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			q := r.lastQuery()
			if tc.by == "" && q != nil || tc.by != "" && (q == nil || q.Get("by") != tc.by) {
				t.Errorf("asked %v, want by=%q", q, tc.by)
			}
			if tc.wantOut != "" {
				if !strings.Contains(out, tc.wantOut) {
					t.Errorf("output lacks %q:\n%s", tc.wantOut, out)
				}
				if name == "svc with a name" && strings.Contains(out, "converter") {
					t.Errorf("stat svc web showed another Service:\n%s", out)
				}
			}
		})
	}
}

func TestEdgesShowIdentitiesAndMTLS(t *testing.T) {
	r := newReplica(t)
	// Sorted by source, as the API sorts them: the caller outside the
	// mesh has none.
	r.edges = traffic.EdgesResponse{Window: "1m0s", Edges: []traffic.Edge{
		{Source: traffic.EdgeSource{Namespace: "temperature"},
			Destination: traffic.EdgeDestination{Namespace: "temperature", Workload: "temperature-api", Identity: "spiffe://cluster.local/ns/temperature/sa/temperature-api"},
			Requests:    60, RPS: 1, SuccessRate: ptr(1.0), LatencyMs: &traffic.Latency{P50: 3, P95: 4, P99: 5}},
		{Source: traffic.EdgeSource{Namespace: "temperature", Workload: "temperature-api", Identity: "spiffe://cluster.local/ns/temperature/sa/temperature-api"},
			Destination: traffic.EdgeDestination{Namespace: "temperature", Workload: "converter", Identity: "spiffe://cluster.local/ns/temperature/sa/converter", Service: "converter"},
			Requests:    120, RPS: 2, SuccessRate: ptr(0.5), LatencyMs: &traffic.Latency{P50: 1, P95: 2, P99: 12.5}, MTLS: true},
	}}
	out, _, err := run(t, "trellisctl", "edges", "-n", "temperature", "--control-plane-url="+r.URL, noCluster(t))
	if err != nil {
		t.Fatal(err)
	}
	if q := r.lastQuery(); q.Get("path") != traffic.PathEdges || q.Get("namespace") != "temperature" || q.Get("window") != "1m0s" {
		t.Errorf("asked %v", q)
	}
	want := [][]string{
		{"SRC", "DST", "SRC_NS", "DST_NS", "SERVICE", "MTLS", "RPS", "SUCCESS", "LATENCY_P99", "CLIENT_ID", "SERVER_ID"},
		{"-", "temperature-api", "temperature", "temperature", "-", "no", "1.0rps", "100.00%", "5.0ms", "-", "spiffe://cluster.local/ns/temperature/sa/temperature-api"},
		{"temperature-api", "converter", "temperature", "temperature", "converter", "yes", "2.0rps", "50.00%", "12ms",
			"spiffe://cluster.local/ns/temperature/sa/temperature-api", "spiffe://cluster.local/ns/temperature/sa/converter"},
	}
	if got := fields(out); !equalRows(got, want) {
		t.Errorf("edges printed\n%s\nwant %q", out, want)
	}
	out, _, err = run(t, "trellisctl", "edges", "-n", "temperature", "-o", "json", "--control-plane-url="+r.URL, noCluster(t))
	if err != nil {
		t.Fatal(err)
	}
	var resp traffic.EdgesResponse
	if err := json.Unmarshal([]byte(out), &resp); err != nil || len(resp.Edges) != 2 || !resp.Edges[1].MTLS || resp.Edges[1].Source.Identity == "" || resp.Edges[0].Source.Workload != "" {
		t.Errorf("json %v: %+v", err, resp)
	}
}

func TestProxyStatusFlagsOldProxies(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	fresh := now.Add(-3 * time.Second)
	a := newReplica(t)
	// The mesh's proxies, sorted by namespace and pod, as the API lists them.
	a.proxies = []traffic.ProxyStatus{
		{Namespace: "shop", Pod: "old-1", Workload: "old", Version: "v0.0.9", CertNotAfter: now.Add(-time.Hour), LastReportAt: now.Add(-4 * time.Minute)},
		{Namespace: "shop", Pod: "web-1", Workload: "web", Version: "v0.1.0", CertNotAfter: now.Add(20 * time.Hour), LastConfigAt: &fresh, Streams: 3, LastReportAt: fresh, Connected: true},
		{Namespace: "shop", Pod: "web-2", Workload: "web", Version: "v0.1.0", CertNotAfter: now.Add(20 * time.Hour), LastReportAt: fresh, Connected: true, Streams: 1},
	}
	urls := []string{"--control-plane-url=" + a.URL, noCluster(t)}
	out, errOut, err := run(t, "trellisctl", append([]string{"proxy-status", "-n", "shop", "--proxy-version", "v0.1.0"}, urls...)...)
	if err != nil {
		t.Fatal(err)
	}
	rows := fields(out)
	if len(rows) != 4 || strings.Join(rows[0], " ") != "POD WORKLOAD VERSION CERT_EXPIRES CONFIG_AGE STREAMS LAST_REPORT STATUS" {
		t.Fatalf("proxy-status printed\n%s", out)
	}
	old := strings.Join(rows[1], "|")
	if !strings.HasPrefix(old, "old-1|old|v0.0.9|-1h0m|-|0|4m|outdated: runs v0.0.9, the Mesh wants v0.1.0; certificate expired 1h0m ago; not connected") {
		t.Errorf("old proxy's row %q", old)
	}
	if got := strings.Join(rows[3], "|"); got != "web-2|web|v0.1.0|19h59m|-|1|3s|ok" {
		t.Errorf("web-2's row %q", got)
	}
	if !strings.Contains(errOut, "Expected proxy version v0.1.0 (from --proxy-version)") {
		t.Errorf("stderr %q does not say the expected version", errOut)
	}

	// Without a cluster, proxies are judged against trellisctl's version.
	out, _, err = run(t, "trellisctl", append([]string{"proxy-status", "-A", "-o", "json"}, urls...)...)
	if err != nil {
		t.Fatal(err)
	}
	var got proxyStatusJSON
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if got.ExpectedFrom != "trellisctl" || len(got.Proxies) != 3 || !got.Proxies[0].Outdated || got.Proxies[1].Outdated ||
		got.Proxies[1].LastConfigAt == nil || !got.Proxies[1].LastConfigAt.Equal(fresh) || len(got.Proxies[2].Problems) != 0 {
		t.Errorf("json %s", out)
	}
	if q := a.lastQuery(); q.Has("namespace") {
		t.Errorf("-A asked for namespace %q", q.Get("namespace"))
	}
}

func TestTopOnceBusiestFirst(t *testing.T) {
	a := newReplica(t)
	// Busiest first, as the API sorts them.
	a.top = traffic.TopResponse{Window: "10s", Rows: []traffic.StatRow{
		{Kind: "route", Namespace: "shop", Name: "search", Requests: 80, RPS: 8, SuccessRate: ptr(0.75), LatencyMs: &traffic.Latency{P50: 2, P95: 3, P99: 4}},
		{Kind: "route", Namespace: "shop", Name: "checkout", Requests: 50, RPS: 5, SuccessRate: ptr(1.0), LatencyMs: &traffic.Latency{P50: 1, P95: 2, P99: 3}},
	}}
	urls := []string{"--control-plane-url=" + a.URL, noCluster(t)}
	out, _, err := run(t, "trellisctl", append([]string{"top", "-n", "shop"}, urls...)...)
	if err != nil {
		t.Fatal(err)
	}
	if q := a.lastQuery(); q.Get("window") != "10s" || q.Get("path") != traffic.PathTop {
		t.Errorf("top asked %v, want window 10s", q)
	}
	want := [][]string{
		{"ROUTE", "REQUESTS", "RPS", "SUCCESS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"},
		{"search", "80", "8.0rps", "75.00%", "2.0ms", "3.0ms", "4.0ms"},
		{"checkout", "50", "5.0rps", "100.00%", "1.0ms", "2.0ms", "3.0ms"},
	}
	if got := fields(out); !equalRows(got, want) {
		t.Errorf("top printed (not a terminal: once)\n%s\nwant %q", out, want)
	}
	out, _, err = run(t, "trellisctl", append([]string{"top", "-n", "shop", "-o", "json", "--limit", "1"}, urls...)...)
	if err != nil {
		t.Fatal(err)
	}
	var resp traffic.TopResponse
	if err := json.Unmarshal([]byte(out), &resp); err != nil || len(resp.Rows) != 1 || resp.Rows[0].Name != "search" {
		t.Errorf("json (limit 1) %v:\n%s", err, out)
	}
}

func TestAControlPlaneErrorNamesTheReplica(t *testing.T) {
	broken := newReplica(t)
	_, _, err := run(t, "trellisctl", "stat", "--control-plane-url="+broken.URL, noCluster(t))
	if err == nil || !strings.Contains(err.Error(), broken.URL) || !strings.Contains(err.Error(), "by workload: use workload, service or route") {
		t.Errorf("error %v, want the broken replica's URL and its message", err)
	}
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	_, _, err = run(t, "trellisctl", "edges", "--control-plane-url="+gone.URL, noCluster(t))
	if err == nil || !strings.Contains(err.Error(), gone.URL) {
		t.Errorf("error %v, want one naming the unreachable replica", err)
	}
}

func TestDashboardPrintsTheURLUntilInterrupted(t *testing.T) {
	r := newReplica(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	cmd := newRootCommand("trellisctl", strings.NewReader(""), &out, &errOut)
	cmd.SetArgs([]string{"dashboard", "--no-browser", "--control-plane-url=" + r.URL, noCluster(t)})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "Trellis dashboard: "+r.URL+"/") {
		if time.Now().After(deadline) {
			t.Fatalf("no URL printed: %q %q", out.String(), errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("dashboard ended before Ctrl-C: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("dashboard ended with %v on Ctrl-C", err)
	}
}
