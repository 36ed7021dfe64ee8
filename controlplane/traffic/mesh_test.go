package traffic

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/latency"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// clustered is the histogram of n requests of about ms milliseconds (±
// spread, a share of ms), as a proxy counts them.
func clustered(r *rand.Rand, n uint64, ms, spread float64) ([]uint32, []uint64) {
	var dense [latency.Buckets]uint64
	for range n {
		d := ms * (1 + spread*(2*r.Float64()-1))
		dense[latency.BucketOf(time.Duration(d*float64(time.Millisecond)))]++
	}
	var buckets []uint32
	var counts []uint64
	for i, c := range dense {
		if c > 0 {
			buckets, counts = append(buckets, uint32(i)), append(counts, c)
		}
	}
	return buckets, counts
}

// replicas are two control plane replicas, each a real Store behind a real
// HTTP server on loopback that knows the other as its peer, and one more
// Store that took every report, as a single replica would have: what both
// must answer for the mesh.
type replicas struct {
	clock      *clock
	a, b, all  *Store
	srvA, srvB *httptest.Server
	srvAll     *httptest.Server
}

func newReplicas(t *testing.T) *replicas {
	t.Helper()
	c := newClock()
	r := &replicas{clock: c}
	r.a = NewStore(Options{Now: c.Now, Pods: shopPods, Self: "cp-a", PeerTimeout: 500 * time.Millisecond})
	r.b = NewStore(Options{Now: c.Now, Pods: shopPods, Self: "cp-b", PeerTimeout: 500 * time.Millisecond})
	r.all = NewStore(Options{Now: c.Now, Pods: shopPods, Self: "cp-all"})
	r.srvA, r.srvB, r.srvAll = httptest.NewServer(r.a.Handler()), httptest.NewServer(r.b.Handler()), httptest.NewServer(r.all.Handler())
	t.Cleanup(r.srvA.Close)
	t.Cleanup(r.srvB.Close)
	t.Cleanup(r.srvAll.Close)
	r.a.SetPeers(func() ([]Peer, error) { return []Peer{{Name: "cp-b", URL: r.srvB.URL}}, nil })
	r.b.SetPeers(func() ([]Peer, error) { return []Peer{{Name: "cp-a", URL: r.srvA.URL}}, nil })

	// web calls the api's two pods: about 51 ms on one, 3.2 ms on the
	// other, a tenth failing. web and api-xyz12 report to replica a,
	// api-qrs34 to b, which also served a caller outside the mesh.
	rnd := rand.New(rand.NewPCG(9, 9))
	row := func(dir controlplanev1.Direction, peerID, peerPod string, n, ok uint64, ms, spread float64) *controlplanev1.TrafficRow {
		tr := &controlplanev1.TrafficRow{Direction: dir, PeerIdentity: peerID, PeerPod: peerPod, Mtls: peerID != "",
			Requests: n, Successes: ok, RequestBytes: 10 * n, ResponseBytes: 100 * n}
		if dir == controlplanev1.Direction_DIRECTION_OUTBOUND {
			tr.Service, tr.Route = "shop/api", "shop/api-v1"
		}
		tr.LatencyBuckets, tr.LatencyBucketCounts = clustered(rnd, n, ms, spread)
		return tr
	}
	out, in := controlplanev1.Direction_DIRECTION_OUTBOUND, controlplanev1.Direction_DIRECTION_INBOUND
	c.Advance(10 * time.Second)
	send := func(s *Store) func(reporter, *controlplanev1.ReportRequest) {
		return func(rep reporter, req *controlplanev1.ReportRequest) {
			s.ingest(rep, req)
			r.all.ingest(rep, req)
		}
	}
	send(r.a)(report("web-6d8f7b9c4-abcde", webID, 10*time.Second,
		row(out, apiID, "api-5c7d8e9f-xyz12", 1000, 900, 51, 0.02),
		row(out, apiID, "api-5c7d8e9f-qrs34", 2000, 1800, 3.2, 0.05)))
	send(r.a)(report("api-5c7d8e9f-xyz12", apiID, 10*time.Second, row(in, webID, "", 1000, 900, 51, 0.02)))
	send(r.b)(report("api-5c7d8e9f-qrs34", apiID, 10*time.Second,
		row(in, webID, "", 2000, 1800, 3.2, 0.05), row(in, "", "", 500, 500, 3.2, 0.05)))
	c.Advance(20 * time.Second) // settled
	return r
}

// getAPI decodes srv's answer to path, and returns its HeaderPartial.
func getAPI(t *testing.T, srv *httptest.Server, path string, v any) string {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s answered %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return resp.Header.Get(HeaderPartial)
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every replica answers for the whole mesh: what replica a and replica b
// say is what one replica that had every report says, exactly, histograms
// included; and the percentiles are the requests' own within 5%.
func TestEveryReplicaAnswersForTheMesh(t *testing.T) {
	r := newReplicas(t)
	for _, path := range []string{
		PathStat + "?namespace=shop&by=workload", PathStat + "?by=service", PathStat + "?namespace=shop&by=route&window=30s",
		PathTop + "?window=5m", PathEdges + "?namespace=shop",
	} {
		var want StatResponse
		var wantEdges EdgesResponse
		if strings.HasPrefix(path, PathEdges) {
			getAPI(t, r.srvAll, path, &wantEdges)
		} else {
			getAPI(t, r.srvAll, path, &want)
		}
		for _, srv := range []*httptest.Server{r.srvA, r.srvB} {
			var got StatResponse
			var gotEdges EdgesResponse
			var partial string
			if strings.HasPrefix(path, PathEdges) {
				partial = getAPI(t, srv, path, &gotEdges)
				if g, w := jsonOf(t, gotEdges.Edges), jsonOf(t, wantEdges.Edges); g != w {
					t.Errorf("%s%s: edges\n%s\nwant those of one replica that had every report:\n%s", srv.URL, path, g, w)
				}
				got.Coverage = gotEdges.Coverage
			} else {
				partial = getAPI(t, srv, path, &got)
				if g, w := jsonOf(t, got.Rows), jsonOf(t, want.Rows); g != w || len(got.Rows) == 0 {
					t.Errorf("%s%s: rows\n%s\nwant those of one replica that had every report:\n%s", srv.URL, path, g, w)
				}
			}
			if got.Partial || partial != "" || len(got.Replicas) != 2 || !got.Replicas[0].Answered || !got.Replicas[1].Answered {
				t.Errorf("%s%s: coverage %+v, header %q; want both replicas, not partial", srv.URL, path, got.Coverage, partial)
			}
		}
	}

	var st StatResponse
	getAPI(t, r.srvB, PathStat+"?namespace=shop", &st)
	near := func(got, want float64) bool { return math.Abs(got-want)/want <= 0.05 }
	for _, row := range st.Rows {
		if row.Name != "api" {
			continue
		}
		// 2500 at 3.2 ms (b's and a's) and 1000 at 51 ms (a's): p50 is
		// 3.2 ms, p95 and p99 51 ms.
		if row.MeshedPods != 2 || row.Requests != 3500 || row.BytesIn != 35000 || row.LatencyMs == nil ||
			!near(row.LatencyMs.P50, 3.2) || !near(row.LatencyMs.P95, 51) || !near(row.LatencyMs.P99, 51) ||
			row.SuccessRate == nil || math.Abs(*row.SuccessRate-3200.0/3500) > 1e-12 {
			t.Errorf("api across both replicas: %+v %+v", row, row.LatencyMs)
		}
		if h := row.LatencyHistogram; h == nil || len(h.BoundsMs) != len(h.Counts) || len(h.BoundsMs) < 2 {
			t.Errorf("api's histogram %+v", h)
		}
	}

	var proxies, wantProxies []ProxyStatus
	getAPI(t, r.srvAll, PathProxies, &wantProxies)
	getAPI(t, r.srvA, PathProxies+"?namespace=shop", &proxies)
	if g, w := jsonOf(t, proxies), jsonOf(t, wantProxies); g != w || len(proxies) != 3 {
		t.Errorf("proxies across both replicas\n%s\nwant\n%s", g, w)
	}

	// scope=local is the replica's own proxies'.
	var local StatResponse
	getAPI(t, r.srvB, PathStat+"?namespace=shop&scope=local", &local)
	if len(local.Rows) != 1 || local.Rows[0].Name != "api" || local.Rows[0].Requests != 2500 || local.Rows[0].MeshedPods != 1 || local.Partial {
		t.Errorf("b's local stat: %+v", local)
	}
	resp, err := http.Get(r.srvA.URL + PathStat + "?scope=cluster")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("scope=cluster answered %s, want 400", resp.Status)
	}
}

// A replica that does not answer, answers slowly or with other buckets is
// named, and the answer, the other replicas' numbers, says it is partial.
func TestAnAnswerMissingAReplicaIsPartial(t *testing.T) {
	r := newReplicas(t)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		select {
		case <-req.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()
	otherVersion := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(StatResponse{Window: "1m0s", Rows: []StatRow{{Kind: KindWorkload, Namespace: "shop", Name: "api",
			Requests: 10, LatencyHistogram: &LatencyHistogram{BoundsMs: []float64{5}, Counts: []float64{10}}}}})
	}))
	defer otherVersion.Close()
	var local StatResponse
	getAPI(t, r.srvA, PathStat+"?namespace=shop&scope=local", &local)
	r.srvB.Close()

	for name, tc := range map[string]struct {
		peers  []Peer
		reason string
	}{
		"down":          {[]Peer{{Name: "cp-b", URL: r.srvB.URL}}, "cp-b ("},
		"too slow":      {[]Peer{{Name: "cp-slow", URL: slow.URL}}, "cp-slow (no answer from " + slow.URL + " within 500ms)"},
		"other buckets": {[]Peer{{Name: "cp-old", URL: otherVersion.URL}}, "bound 5 ms is not one of this replica's increasing bounds"},
	} {
		t.Run(name, func(t *testing.T) {
			r.a.SetPeers(func() ([]Peer, error) { return tc.peers, nil })
			var got StatResponse
			start := time.Now()
			header := getAPI(t, r.srvA, PathStat+"?namespace=shop", &got)
			if time.Since(start) > 2*time.Second {
				t.Errorf("the answer took %s: a missing replica must not hold it up", time.Since(start))
			}
			if !got.Partial || !strings.Contains(got.Message, tc.reason) || !strings.Contains(got.Message, "Partial answer") || header == "" {
				t.Errorf("partial %v, message %q, header %q; want partial naming %q", got.Partial, got.Message, header, tc.reason)
			}
			if len(got.Replicas) != 2 || !got.Replicas[0].Answered || got.Replicas[1].Answered || got.Replicas[1].Name != tc.peers[0].Name || got.Replicas[1].Error == "" {
				t.Errorf("replicas %+v", got.Replicas)
			}
			if g, w := jsonOf(t, got.Rows), jsonOf(t, local.Rows); g != w {
				t.Errorf("rows\n%s\nwant a's own\n%s", g, w)
			}
		})
	}

	r.a.SetPeers(func() ([]Peer, error) { return nil, errLookup })
	var got EdgesResponse
	if getAPI(t, r.srvA, PathEdges, &got); !got.Partial || !strings.Contains(got.Message, "could not list the other control plane replicas (no cache)") {
		t.Errorf("a failed lookup: %+v", got.Coverage)
	}
	var ps []ProxyStatus
	if h := getAPI(t, r.srvA, PathProxies, &ps); !strings.Contains(h, "could not list") || len(ps) != 2 {
		t.Errorf("proxies with a failed lookup: header %q, %d proxies", h, len(ps))
	}
}

var errLookup = &lookupError{}

type lookupError struct{}

func (*lookupError) Error() string { return "no cache" }
