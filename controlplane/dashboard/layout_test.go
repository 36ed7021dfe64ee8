package dashboard_test

import (
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/controlplane/dashboard"
	"github.com/trellis-mesh/trellis/controlplane/traffic"
	"github.com/trellis-mesh/trellis/test/browser"
)

// cannedAPI answers the traffic API's paths with fixed edges, in an order
// the test shuffles between polls: the layout must not depend on it.
type cannedAPI struct {
	mu    sync.Mutex
	edges []traffic.Edge
	rng   *rand.Rand
}

func (c *cannedAPI) register(mux *http.ServeMux) {
	write := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET "+traffic.PathEdges, func(w http.ResponseWriter, _ *http.Request) {
		c.mu.Lock()
		edges := append([]traffic.Edge(nil), c.edges...)
		c.rng.Shuffle(len(edges), func(i, j int) { edges[i], edges[j] = edges[j], edges[i] })
		c.mu.Unlock()
		write(w, traffic.EdgesResponse{Window: "1m0s", Edges: edges})
	})
	mux.HandleFunc("GET "+traffic.PathStat, func(w http.ResponseWriter, _ *http.Request) {
		write(w, traffic.StatResponse{Window: "1m0s", Rows: []traffic.StatRow{}})
	})
	mux.HandleFunc("GET "+traffic.PathProxies, func(w http.ResponseWriter, _ *http.Request) {
		write(w, []traffic.ProxyStatus{})
	})
}

func rate(v float64) *float64 { return &v }

func edge(srcNS, src, dstNS, dst string, rps, success float64) traffic.Edge {
	return traffic.Edge{
		Source:      traffic.EdgeSource{Namespace: srcNS, Workload: src},
		Destination: traffic.EdgeDestination{Namespace: dstNS, Workload: dst},
		Requests:    uint64(rps * 60), RPS: rps, SuccessRate: rate(success), MTLS: true,
		LatencyMs: &traffic.Latency{P50: 2, P95: 8, P99: 12},
	}
}

// TestLayout checks the graph's layout rules on a graph with a chain, a
// shortcut, a cycle, a self call and a caller outside the mesh: callers
// are left of what they call along the longest chain, and no node moves
// between refreshes whatever the order of the API's edges.
func TestLayout(t *testing.T) {
	b := browser.Launch(t)
	api := &cannedAPI{rng: rand.New(rand.NewPCG(1, 2)), edges: []traffic.Edge{
		{Source: traffic.EdgeSource{}, Destination: traffic.EdgeDestination{Namespace: "shop", Workload: "web"},
			Requests: 600, RPS: 10, SuccessRate: rate(1), LatencyMs: &traffic.Latency{P50: 1, P95: 2, P99: 3}},
		edge("shop", "web", "shop", "api", 10, 1),
		edge("shop", "api", "shop", "db", 20, 0.97),
		edge("shop", "web", "shop", "db", 1, 1), // shortcut: db stays right of api
		edge("shop", "api", "billing", "payments", 2, 0.5),
		edge("billing", "payments", "shop", "api", 0.5, 1), // closes a cycle
		edge("shop", "db", "shop", "db", 0.2, 1),           // self call
	}}
	mux := http.NewServeMux()
	dashboard.Register(mux)
	api.register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	d, err := browser.OpenDashboard(b, srv.URL+"/", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first, err := d.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 5 {
		t.Fatalf("nodes: got %d, want 5 (web, api, db, payments, outside the mesh): %+v", len(first), first)
	}
	x := map[string]float64{}
	for _, n := range first {
		x[n.Key] = n.X
	}
	for _, pair := range [][2]string{{"unmeshed:", "shop/web"}, {"shop/web", "shop/api"}, {"shop/api", "shop/db"}, {"shop/api", "billing/payments"}} {
		if x[pair[0]] >= x[pair[1]] {
			t.Errorf("%s (x=%v) is not left of %s (x=%v), which it calls", pair[0], x[pair[0]], pair[1], x[pair[1]])
		}
	}
	if _, err := b.Screenshot("dashboard-layout"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		st, err := d.Status()
		if err != nil {
			t.Fatal(err)
		}
		if err := d.WaitUpdates(st.Updates, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		again, err := d.Nodes()
		if err != nil {
			t.Fatal(err)
		}
		for j := range first {
			if again[j] != first[j] {
				t.Errorf("refresh %d: node %s moved from (%v, %v) to (%v, %v)", i+1, first[j].Key, first[j].X, first[j].Y, again[j].X, again[j].Y)
			}
		}
	}
	if errs := b.JSErrors(); len(errs) > 0 {
		t.Errorf("the page's errors: %v", errs)
	}
}
