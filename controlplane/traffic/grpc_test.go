package traffic_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/trellis-mesh/trellis/controlplane/traffic"
	"github.com/trellis-mesh/trellis/controlplane/traffic/traffictest"
	"github.com/trellis-mesh/trellis/latency"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/proxy/report"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// shopPods are the pods the Store's PodLookup knows.
var shopPods = map[[2]string]traffic.PodInfo{
	{"shop", "web-6d8f7b9c4-abcde"}: {ServiceAccount: "web", Workload: "web", WorkloadKind: "Deployment"},
	{"shop", "api-5c7d8e9f-xyz12"}:  {ServiceAccount: "api", Workload: "api", WorkloadKind: "Deployment"},
}

// startMesh starts a control plane serving the TelemetryService over its
// own mTLS (controlplane.Server's certificates and client checks) on
// loopback, and the traffic API over HTTP.
func startMesh(t *testing.T) *traffictest.ControlPlane {
	t.Helper()
	return traffictest.Start(t, traffictest.Options{Pods: shopPods})
}

// proxy runs a proxy's Recorder and Reporter for pod, connected as sa.
func proxy(t *testing.T, m *traffictest.ControlPlane, sa, pod string) *report.Recorder {
	t.Helper()
	rec := report.NewRecorder(report.RecorderOptions{})
	r := report.NewReporter(report.Options{
		Client:   controlplanev1.NewTelemetryServiceClient(m.Dial(t, "shop", sa)),
		Recorder: rec,
		Interval: 50 * time.Millisecond,
		Info: func() *controlplanev1.ProxyInfo {
			return &controlplanev1.ProxyInfo{Namespace: "shop", Pod: pod, Identity: "spiffe://" + traffictest.TrustDomain + "/ns/shop/sa/" + sa,
				Version: "v9.9.9", DiscoveryStreams: 3}
		},
		Log: quiet,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return rec
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two proxies report over the control plane's mTLS with the proxy's own
// Reporter; the API shows their traffic by workload, Service and route, as
// edges, and the proxies' status.
func TestReportsToAPI(t *testing.T) {
	m := startMesh(t)
	web := proxy(t, m, "web", "web-6d8f7b9c4-abcde")
	api := proxy(t, m, "api", "api-5c7d8e9f-xyz12")
	waitFor(t, "both proxies connected", func() bool {
		ps := traffictest.GetJSON[[]traffic.ProxyStatus](t, m.API.URL+traffic.PathProxies+"?namespace=shop")
		return len(ps) == 2 && ps[0].Connected && ps[1].Connected
	})

	apiID := "spiffe://cluster.local/ns/shop/sa/api"
	out := web.Row(report.Key{Direction: controlplanev1.Direction_DIRECTION_OUTBOUND, PeerIdentity: apiID, PeerPod: "api-5c7d8e9f-xyz12",
		Service: "shop/api", Route: "shop/api-v1", MTLS: true})
	in := api.Row(report.Key{Direction: controlplanev1.Direction_DIRECTION_INBOUND, PeerIdentity: "spiffe://cluster.local/ns/shop/sa/web", MTLS: true})
	for i := range 100 {
		ok := i%10 != 0 // 90% succeed
		d := 3 * time.Millisecond
		if i >= 95 {
			d = 300 * time.Millisecond // the slowest 5%
		}
		out.Observe(ok, d, 10, 100)
		in.Observe(ok, d, 10, 100)
	}
	// The store takes everything of the last 5 minutes; wait until it has
	// the 100 requests of each side, then move its clock on so that their
	// buckets settle.
	waitFor(t, "the reports", func() bool {
		m.Advance(30 * time.Second)
		defer m.Advance(-30 * time.Second)
		st := traffictest.GetJSON[traffic.StatResponse](t, m.API.URL+traffic.PathStat+"?namespace=shop&by=service&window=1m")
		return len(st.Rows) == 1 && st.Rows[0].Requests == 100
	})
	m.Advance(30 * time.Second)

	st := traffictest.GetJSON[traffic.StatResponse](t, m.API.URL+traffic.PathStat+"?namespace=shop&window=1m")
	if st.Window != "1m0s" || len(st.Rows) != 2 {
		t.Fatalf("stat by workload: %+v", st)
	}
	a := st.Rows[0]
	if a.Name != "api" || a.Kind != traffic.KindWorkload || a.WorkloadKind != "Deployment" || a.Requests != 100 || a.MeshedPods != 1 ||
		a.SuccessRate == nil || *a.SuccessRate != 0.9 || a.BytesIn != 1000 || a.BytesOut != 10000 {
		t.Errorf("api: %+v", a)
	}
	if a.RPS < 100.0/60-1e-9 || a.RPS > 100.0/60+1e-9 {
		t.Errorf("api rps %v, want 100 requests over 60 s", a.RPS)
	}
	// p50 is a fast request's 3 ms and p99 a slow one's 300 ms, within the
	// histogram's relative error.
	near := func(got, want float64) bool { return math.Abs(got-want)/want <= latency.RelativeError }
	if l := a.LatencyMs; l == nil || !near(l.P50, 3) || !near(l.P95, 3) || !near(l.P99, 300) {
		t.Errorf("api latency: %+v", a.LatencyMs)
	}
	if w := st.Rows[1]; w.Name != "web" || w.Requests != 0 || w.SuccessRate != nil {
		t.Errorf("web: %+v", w)
	}

	routes := traffictest.GetJSON[traffic.StatResponse](t, m.API.URL+traffic.PathStat+"?namespace=shop&by=route&window=1m")
	if len(routes.Rows) != 1 || routes.Rows[0].Name != "api-v1" || routes.Rows[0].Requests != 100 {
		t.Errorf("routes: %+v", routes)
	}
	top := traffictest.GetJSON[traffic.TopResponse](t, m.API.URL+traffic.PathTop+"?namespace=shop")
	if len(top.Rows) != 1 || top.Rows[0].Name != "api-v1" {
		t.Errorf("top: %+v", top)
	}
	edges := traffictest.GetJSON[traffic.EdgesResponse](t, m.API.URL+traffic.PathEdges+"?namespace=shop&window=1m")
	if len(edges.Edges) != 1 {
		t.Fatalf("edges: %+v", edges)
	}
	e := edges.Edges[0]
	if e.Source.Workload != "web" || e.Destination.Workload != "api" || e.Destination.Identity != apiID || e.Destination.Service != "api" ||
		!e.MTLS || e.Requests != 100 || *e.SuccessRate != 0.9 {
		t.Errorf("edge: %+v", e)
	}

	ps := traffictest.GetJSON[[]traffic.ProxyStatus](t, m.API.URL+traffic.PathProxies+"?namespace=shop")
	if p := ps[0]; p.Pod != "api-5c7d8e9f-xyz12" || p.Workload != "api" || p.Identity != apiID || p.Version != "v9.9.9" || p.Streams != 3 {
		t.Errorf("proxy: %+v", p)
	}
	if ps := traffictest.GetJSON[[]traffic.ProxyStatus](t, m.API.URL+traffic.PathProxies+"?namespace=other"); len(ps) != 0 {
		t.Errorf("proxies of namespace other: %+v", ps)
	}
}

// send opens a Report stream as sa and sends req; it returns the status
// the control plane ended the stream with.
func send(t *testing.T, m *traffictest.ControlPlane, sa string, reqs ...*controlplanev1.ReportRequest) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := controlplanev1.NewTelemetryServiceClient(m.Dial(t, "shop", sa)).Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range reqs {
		if err := stream.Send(req); err != nil {
			break // the status comes with CloseAndRecv
		}
	}
	_, err = stream.CloseAndRecv()
	return err
}

func validReport(pod, sa string) *controlplanev1.ReportRequest {
	return &controlplanev1.ReportRequest{
		Proxy:                 &controlplanev1.ProxyInfo{Namespace: "shop", Pod: pod, Identity: "spiffe://cluster.local/ns/shop/sa/" + sa},
		Interval:              durationpb.New(10 * time.Second),
		LatencyBucketBoundsMs: latency.BoundsMs[:],
		Rows: []*controlplanev1.TrafficRow{{Direction: controlplanev1.Direction_DIRECTION_OUTBOUND, Service: "shop/api",
			Requests: 2, Successes: 1, LatencyBuckets: []uint32{40}, LatencyBucketCounts: []uint64{2}}},
	}
}

// A proxy reports only as itself, for its own pod; a malformed report is
// refused whole, with what is wrong, and leaves the store as it was.
func TestRefusals(t *testing.T) {
	m := startMesh(t)
	if err := send(t, m, "web", validReport("web-6d8f7b9c4-abcde", "web")); err != nil {
		t.Fatalf("a valid report: %v", err)
	}
	for name, tc := range map[string]struct {
		sa     string
		req    func(*controlplanev1.ReportRequest)
		code   codes.Code
		reason string // in the message
	}{
		"another identity": {"web", func(r *controlplanev1.ReportRequest) {
			r.Proxy.Identity = "spiffe://cluster.local/ns/shop/sa/api"
		}, codes.PermissionDenied, "may report only as itself"},
		"another ServiceAccount's pod": {"web", func(r *controlplanev1.ReportRequest) {
			r.Proxy.Pod = "api-5c7d8e9f-xyz12"
		}, codes.PermissionDenied, "runs as ServiceAccount api"},
		"another namespace": {"web", func(r *controlplanev1.ReportRequest) {
			r.Proxy.Namespace = "bank"
		}, codes.PermissionDenied, "its own namespace"},
		"no pod": {"web", func(r *controlplanev1.ReportRequest) {
			r.Proxy.Pod = ""
		}, codes.InvalidArgument, "proxy.pod"},
		"other latency bounds": {"web", func(r *controlplanev1.ReportRequest) {
			r.LatencyBucketBoundsMs = []float64{0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000}
		}, codes.InvalidArgument, "latency_bucket_bounds_ms has 14 bounds from 0.5"},
		"no latency bounds (a proxy of the coarse histogram's versions)": {"web", func(r *controlplanev1.ReportRequest) {
			r.LatencyBucketBoundsMs = nil
		}, codes.InvalidArgument, "latency_bucket_bounds_ms has 0 bounds from none"},
		"too many rows": {"web", func(r *controlplanev1.ReportRequest) {
			for range traffic.MaxRowsPerMessage {
				r.Rows = append(r.Rows, r.Rows[0])
			}
		}, codes.InvalidArgument, "more than 500"},
		"more successes than requests": {"web", func(r *controlplanev1.ReportRequest) {
			r.Rows[0].Successes = 3
		}, codes.InvalidArgument, "rows[0]: successes 3 is more than requests 2"},
		"absurd requests": {"web", func(r *controlplanev1.ReportRequest) {
			r.Rows[0].Requests, r.Rows[0].LatencyBucketCounts[0] = 1<<62, 1<<62
		}, codes.InvalidArgument, "requests 4611686018427387904 is more than"},
		"histogram that does not add up": {"web", func(r *controlplanev1.ReportRequest) {
			r.Rows[0].LatencyBucketCounts[0] = 1
		}, codes.InvalidArgument, "add up to 1, not requests 2"},
		"counts without indexes": {"web", func(r *controlplanev1.ReportRequest) {
			r.Rows[0].LatencyBuckets = nil
		}, codes.InvalidArgument, "latency_buckets has 0 indexes but latency_bucket_counts 1 counts"},
		"indexes out of order": {"web", func(r *controlplanev1.ReportRequest) {
			r.Rows[0].LatencyBuckets, r.Rows[0].LatencyBucketCounts = []uint32{41, 40}, []uint64{1, 1}
		}, codes.InvalidArgument, "want increasing indexes below 156"},
		"index beyond the last bucket": {"web", func(r *controlplanev1.ReportRequest) {
			r.Rows[0].LatencyBuckets = []uint32{156}
		}, codes.InvalidArgument, "want increasing indexes below 156"},
		"an empty bucket sent": {"web", func(r *controlplanev1.ReportRequest) {
			r.Rows[0].LatencyBuckets, r.Rows[0].LatencyBucketCounts = []uint32{40, 41}, []uint64{2, 0}
		}, codes.InvalidArgument, "want counts from 1 to requests 2"},
		"no direction": {"web", func(r *controlplanev1.ReportRequest) {
			r.Rows[0].Direction = controlplanev1.Direction_DIRECTION_UNSPECIFIED
		}, codes.InvalidArgument, "direction"},
		"bad service": {"web", func(r *controlplanev1.ReportRequest) {
			r.Rows[0].Service = "api"
		}, codes.InvalidArgument, `service "api" is not <namespace>/<name>`},
		"bad peer identity": {"web", func(r *controlplanev1.ReportRequest) {
			r.Rows[0].PeerIdentity = "api"
		}, codes.InvalidArgument, "not a SPIFFE ID"},
		"negative interval": {"web", func(r *controlplanev1.ReportRequest) {
			r.Interval = durationpb.New(-time.Second)
		}, codes.InvalidArgument, "interval"},
		"huge interval": {"web", func(r *controlplanev1.ReportRequest) {
			r.Interval = durationpb.New(24 * time.Hour)
		}, codes.InvalidArgument, "interval"},
	} {
		t.Run(name, func(t *testing.T) {
			req := validReport("web-6d8f7b9c4-abcde", "web")
			tc.req(req)
			err := send(t, m, tc.sa, req)
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.reason) {
				t.Errorf("got %v; want %v with %q", err, tc.code, tc.reason)
			}
		})
	}
	// A second pod on one stream is refused, after the first's report.
	err := send(t, m, "web", validReport("web-6d8f7b9c4-abcde", "web"), validReport("web-other", "web"))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "a stream carries one proxy's reports") {
		t.Errorf("two pods on a stream: %v", err)
	}

	// Only the valid reports were kept: two, of 2 requests each.
	m.Advance(30 * time.Second)
	st := traffictest.GetJSON[traffic.StatResponse](t, m.API.URL+traffic.PathStat+"?namespace=shop&by=service")
	if len(st.Rows) != 1 || st.Rows[0].Requests != 4 || *st.Rows[0].SuccessRate != 0.5 {
		t.Errorf("after the refusals: %+v", st.Rows)
	}
	ps := traffictest.GetJSON[[]traffic.ProxyStatus](t, m.API.URL+traffic.PathProxies)
	if len(ps) != 1 || ps[0].Pod != "web-6d8f7b9c4-abcde" {
		t.Errorf("proxies after the refusals: %+v", ps)
	}
}

// Bad query parameters are answered 400 with what to send instead.
func TestBadQueries(t *testing.T) {
	m := startMesh(t)
	for _, q := range []string{
		traffic.PathStat + "?by=pod",
		traffic.PathStat + "?window=1h",
		traffic.PathEdges + "?window=soon",
		traffic.PathTop + "?window=1s",
		traffic.PathProxies + "?namespace=" + strings.Repeat("x", 64),
	} {
		resp, err := http.Get(m.API.URL + q)
		if err != nil {
			t.Fatal(err)
		}
		var e traffic.ErrorResponse
		_ = json.NewDecoder(resp.Body).Decode(&e)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || e.Error == "" {
			t.Errorf("%s: %d %q", q, resp.StatusCode, e.Error)
		}
	}
}

// The proxy's histogram is the control plane's.
func TestSameLatencyBuckets(t *testing.T) {
	if report.Buckets != latency.Buckets {
		t.Errorf("the proxy counts %d latency buckets, the control plane reads %d", report.Buckets, latency.Buckets)
	}
}
