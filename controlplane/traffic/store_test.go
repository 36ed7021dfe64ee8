package traffic

import (
	"math"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/trellis-mesh/trellis/latency"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

const (
	webID = "spiffe://cluster.local/ns/shop/sa/web"
	apiID = "spiffe://cluster.local/ns/shop/sa/api"
)

// clock is a settable clock for the Store.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newClock starts at a bucket's start, so that tests know which bucket a
// report falls in.
func newClock() *clock {
	return &clock{t: time.Unix(0, 0).Add(1000 * 24 * time.Hour)}
}

// shopPods are the pods of the tests' cluster.
func shopPods(namespace, name string) (PodInfo, bool) {
	pods := map[string]PodInfo{
		"shop/web-6d8f7b9c4-abcde": {ServiceAccount: "web", Workload: "web", WorkloadKind: "Deployment"},
		"shop/api-5c7d8e9f-xyz12":  {ServiceAccount: "api", Workload: "api", WorkloadKind: "Deployment"},
		"shop/api-5c7d8e9f-qrs34":  {ServiceAccount: "api", Workload: "api", WorkloadKind: "Deployment"},
	}
	info, ok := pods[namespace+"/"+name]
	return info, ok
}

// bucketMs is the latency bucket of a request of ms milliseconds.
func bucketMs(ms float64) uint32 {
	return uint32(latency.BucketOf(time.Duration(ms * float64(time.Millisecond))))
}

func report(pod, id string, interval time.Duration, rows ...*controlplanev1.TrafficRow) (reporter, *controlplanev1.ReportRequest) {
	return reporter{namespace: "shop", pod: pod, identity: id}, &controlplanev1.ReportRequest{
		Proxy: &controlplanev1.ProxyInfo{Namespace: "shop", Pod: pod, Identity: id, Version: "v0.1.0",
			CertNotAfter: timestamppb.New(time.Unix(2e9, 0)), DiscoveryStreams: 2},
		Interval:              durationpb.New(interval),
		LatencyBucketBoundsMs: latency.BoundsMs[:],
		Rows:                  rows,
	}
}

// A report is shared between the buckets its interval overlaps, and a
// window shows only settled buckets: those every report covering them has
// reached.
func TestWindowing(t *testing.T) {
	c := newClock()
	s := NewStore(Options{Now: c.Now, Pods: shopPods})
	row := func(n uint64) *controlplanev1.TrafficRow {
		return &controlplanev1.TrafficRow{Direction: controlplanev1.Direction_DIRECTION_INBOUND, PeerIdentity: webID, Mtls: true,
			Requests: n, Successes: n, LatencyBuckets: []uint32{bucketMs(7)}, LatencyBucketCounts: []uint64{n}}
	}
	// 40 requests over [t+5s, t+15s): 20 in each of two buckets.
	c.Advance(15 * time.Second)
	s.ingest(report("api-5c7d8e9f-xyz12", apiID, 10*time.Second, row(40)))
	if rows := s.stat(query{window: 10 * time.Second}, KindWorkload); len(rows) != 1 || rows[0].Requests != 0 {
		t.Fatalf("unsettled buckets shown: %+v", rows)
	}
	c.Advance(10 * time.Second) // t+25s: bucket [t, t+10s) has settled
	rows := s.stat(query{window: 10 * time.Second}, KindWorkload)
	if len(rows) != 1 || rows[0].Requests != 20 || rows[0].RPS != 2 {
		t.Fatalf("first bucket: %+v", rows)
	}
	c.Advance(10 * time.Second) // t+35s: both
	rows = s.stat(query{window: 20 * time.Second}, KindWorkload)
	if rows[0].Requests != 40 || rows[0].RPS != 2 {
		t.Errorf("both buckets: %+v", rows[0])
	}
	if rows[0].Name != "api" || rows[0].WorkloadKind != "Deployment" || rows[0].MeshedPods != 1 {
		t.Errorf("workload: %+v", rows[0])
	}
	c.Advance(MaxWindow)
	rows = s.stat(query{window: MaxWindow}, KindWorkload)
	if len(rows) != 0 {
		t.Errorf("rows and a proxy older than the longest window are still shown: %+v", rows)
	}
}

// The rows are grouped by workload (the server's view), Service and route
// (the client's), and into edges (the client's view, or the server's for a
// caller outside the mesh).
func TestAggregation(t *testing.T) {
	c := newClock()
	s := NewStore(Options{Now: c.Now, Pods: shopPods})
	out := func(pod string, n, ok uint64) *controlplanev1.TrafficRow {
		return &controlplanev1.TrafficRow{Direction: controlplanev1.Direction_DIRECTION_OUTBOUND, PeerIdentity: apiID, PeerPod: pod,
			Service: "shop/api", Route: "shop/api-v1", Mtls: true, Requests: n, Successes: ok, LatencyBuckets: []uint32{bucketMs(3.5)}, LatencyBucketCounts: []uint64{n},
			RequestBytes: 100 * n, ResponseBytes: 1000 * n}
	}
	in := func(peer string, n, ok uint64, mtls bool) *controlplanev1.TrafficRow {
		return &controlplanev1.TrafficRow{Direction: controlplanev1.Direction_DIRECTION_INBOUND, PeerIdentity: peer, Mtls: mtls,
			Requests: n, Successes: ok, LatencyBuckets: []uint32{bucketMs(3.5)}, LatencyBucketCounts: []uint64{n}, RequestBytes: 100 * n, ResponseBytes: 1000 * n}
	}
	c.Advance(10 * time.Second)
	// web calls both api pods; each api pod reports what it served, and
	// one also served a caller outside the mesh.
	s.ingest(report("web-6d8f7b9c4-abcde", webID, 10*time.Second, out("api-5c7d8e9f-xyz12", 60, 60), out("api-5c7d8e9f-qrs34", 40, 30),
		&controlplanev1.TrafficRow{Direction: controlplanev1.Direction_DIRECTION_OUTBOUND, Service: "shop/api", Route: "shop/api-v1",
			Requests: 10, Successes: 10, LatencyBuckets: []uint32{bucketMs(0.3)}, LatencyBucketCounts: []uint64{10}})) // no route matched: the proxy's 404s, no pod
	s.ingest(report("api-5c7d8e9f-xyz12", apiID, 10*time.Second, in(webID, 60, 60, true), in("", 20, 10, false)))
	s.ingest(report("api-5c7d8e9f-qrs34", apiID, 10*time.Second, in(webID, 40, 30, true)))
	c.Advance(10 * time.Second) // the bucket has settled
	q := query{namespace: "shop", window: 10 * time.Second}

	byWorkload := map[string]StatRow{}
	for _, r := range s.stat(q, KindWorkload) {
		byWorkload[r.Name] = r
	}
	api := byWorkload["api"]
	if api.Requests != 120 || api.MeshedPods != 2 || *api.SuccessRate != 100.0/120 || api.BytesIn != 12000 || api.BytesOut != 120000 {
		t.Errorf("api: %+v", api)
	}
	if api.LatencyMs == nil || math.Abs(api.LatencyMs.P50-3.5)/3.5 > latency.RelativeError {
		t.Errorf("api latency: %+v", api.LatencyMs)
	}
	if web := byWorkload["web"]; web.Requests != 0 || web.SuccessRate != nil || web.LatencyMs != nil || web.MeshedPods != 1 {
		t.Errorf("web, which served nothing: %+v", web)
	}

	svc := s.stat(q, KindService)
	if len(svc) != 1 || svc[0].Name != "api" || svc[0].Requests != 110 || svc[0].MeshedPods != 2 || *svc[0].SuccessRate != 100.0/110 {
		t.Errorf("services: %+v", svc)
	}
	routes := s.stat(q, KindRoute)
	if len(routes) != 1 || routes[0].Name != "api-v1" || routes[0].Requests != 110 {
		t.Errorf("routes: %+v", routes)
	}
	if other := s.stat(query{namespace: "other", window: 10 * time.Second}, KindService); len(other) != 0 {
		t.Errorf("namespace other: %+v", other)
	}

	edges := s.edges(q)
	if len(edges) != 3 {
		t.Fatalf("edges: %+v", edges)
	}
	// Sorted: the caller outside the mesh first (empty workload).
	outside, proxyAnswered, webAPI := edges[0], edges[1], edges[2]
	if outside.Source.Workload != "" || outside.Destination.Workload != "api" || outside.MTLS || outside.Requests != 20 || *outside.SuccessRate != 0.5 {
		t.Errorf("edge from outside the mesh: %+v", outside)
	}
	if proxyAnswered.Destination.Workload != "" || proxyAnswered.Requests != 10 {
		t.Errorf("edge of the proxy's own answers: %+v", proxyAnswered)
	}
	if webAPI.Source != (EdgeSource{"shop", "web", webID}) || webAPI.Destination != (EdgeDestination{"shop", "api", apiID, "api"}) ||
		!webAPI.MTLS || webAPI.Requests != 100 || *webAPI.SuccessRate != 0.9 {
		t.Errorf("web → api: %+v", webAPI)
	}

	top := s.stat(q, KindRoute)
	if len(top) != 1 {
		t.Errorf("top: %+v", top)
	}
	proxies := s.Proxies("shop")
	if len(proxies) != 3 || proxies[0].Pod != "api-5c7d8e9f-qrs34" || proxies[0].Workload != "api" || proxies[0].Streams != 2 ||
		proxies[0].Version != "v0.1.0" || proxies[0].Connected {
		t.Errorf("proxies: %+v", proxies)
	}
}

// A bucket holds at most MaxRowsPerBucket rows; more are dropped and
// counted, and the rows kept are whole.
func TestRowCap(t *testing.T) {
	c := newClock()
	s := NewStore(Options{Now: c.Now, MaxRowsPerBucket: 2})
	c.Advance(5 * time.Second)
	var rows []*controlplanev1.TrafficRow
	for _, pod := range []string{"a", "b", "c"} {
		rows = append(rows, &controlplanev1.TrafficRow{Direction: controlplanev1.Direction_DIRECTION_OUTBOUND, PeerPod: pod, Service: "shop/api",
			Requests: 1, Successes: 1, LatencyBuckets: []uint32{bucketMs(0.3)}, LatencyBucketCounts: []uint64{1}})
	}
	s.ingest(report("web-6d8f7b9c4-abcde", webID, time.Second, rows...))
	if n := s.rowCount(); n != 2 {
		t.Errorf("%d rows kept, want 2", n)
	}
	if got := testutilCounter(s.metrics.droppedRows); got != 1 {
		t.Errorf("dropped %v rows, want 1", got)
	}
}

// BenchmarkIngest is the control plane's cost of one report message of
// MaxRowsPerMessage rows, each to another destination pod, spanning two
// buckets.
func BenchmarkIngest(b *testing.B) {
	c := newClock()
	s := NewStore(Options{Now: c.Now, Pods: shopPods, MaxRowsPerBucket: 1 << 20})
	var rows []*controlplanev1.TrafficRow
	for i := range MaxRowsPerMessage {
		rows = append(rows, &controlplanev1.TrafficRow{Direction: controlplanev1.Direction_DIRECTION_OUTBOUND, PeerIdentity: apiID,
			PeerPod: "api-5c7d8e9f-" + time.Duration(i).String(), Service: "shop/api", Route: "shop/api-v1", Mtls: true,
			Requests: 10, Successes: 9, LatencyBuckets: []uint32{bucketMs(3.5)}, LatencyBucketCounts: []uint64{10}})
	}
	r, req := report("web-6d8f7b9c4-abcde", webID, 10*time.Second, rows...)
	c.Advance(5 * time.Second)
	b.ReportAllocs()
	for b.Loop() {
		s.ingest(r, req)
	}
}
