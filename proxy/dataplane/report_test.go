package dataplane

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/proxy/report"
)

// reportUpstream answers 500 on /api/fail, else 200 with 11 bytes.
func reportUpstream(t testing.TB) *controlplanev1.OutboundResponse {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/api/fail" {
			w.WriteHeader(http.StatusInternalServerError)
		}
		_, _ = io.WriteString(w, "hello world")
	}))
	t.Cleanup(srv.Close)
	return &controlplanev1.OutboundResponse{
		Known: true, Service: svcRef("web"), Protocol: controlplanev1.Protocol_PROTOCOL_HTTP1,
		Backends: []*controlplanev1.Backend{{Service: svcRef("web"), Endpoints: []*controlplanev1.Endpoint{
			{Address: strings.TrimPrefix(srv.URL, "http://"), Pod: "web-5c7d8e9f-xyz12"}}}},
		Routes: []*controlplanev1.Route{{Name: "shop/web-api/0",
			Matches:  []*controlplanev1.Match{{Path: &controlplanev1.PathMatch{Kind: controlplanev1.PathMatch_KIND_PREFIX, Value: "/api"}}},
			Backends: []*controlplanev1.WeightedBackend{{Backend: 0, Weight: 1}}}},
	}
}

// Each request the outbound side ends goes to the report: by route and
// endpoint pod, with its success and bytes; the proxy's own answers (no
// route) by Service alone.
func TestOutboundReport(t *testing.T) {
	rec := report.NewRecorder(report.RecorderOptions{})
	addr := outboundProxyWith(t, reportUpstream(t), Options{Log: quiet, Report: rec})
	c := &http.Client{Timeout: 5 * time.Second}
	do := func(method, path, body string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
		if body == "" {
			req.Body = http.NoBody
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	do("POST", "/api/orders", "12345")
	do("GET", "/api/orders", "")
	do("GET", "/api/fail", "")
	do("GET", "/other", "") // no route: 404 from the proxy

	rows := rec.Collect()
	var routed, local *controlplanev1.TrafficRow
	for _, r := range rows {
		if r.PeerPod != "" {
			routed = r
		} else {
			local = r
		}
	}
	if len(rows) != 2 || routed == nil || local == nil {
		t.Fatalf("rows: %v", rows)
	}
	if routed.Direction != controlplanev1.Direction_DIRECTION_OUTBOUND || routed.Service != "shop/web" || routed.Route != "shop/web-api" ||
		routed.PeerPod != "web-5c7d8e9f-xyz12" || routed.Mtls || routed.Requests != 3 || routed.Successes != 2 ||
		routed.RequestBytes != 5 || routed.ResponseBytes != 33 {
		t.Errorf("routed row: %v", routed)
	}
	if local.Service != "shop/web" || local.Route != "" || local.Requests != 1 || local.Successes != 1 {
		t.Errorf("the proxy's own 404: %v", local)
	}
}

// The proxy's own answer for a pod dialed by its address (no Service)
// reports no Service: its address is not one, and the control plane would
// refuse the report.
func TestOutboundReportOfAPodWithoutService(t *testing.T) {
	rec := report.NewRecorder(report.RecorderOptions{})
	// The upstream's route and endpoint, without the Service: what
	// discovery answers for a pod's address.
	pod := reportUpstream(t)
	pod.Service, pod.Backends[0].Service = nil, nil
	addr := outboundProxyWith(t, pod, Options{Log: quiet, Report: rec})
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/other") // no route: 404 from the proxy
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	rows := rec.Collect()
	if len(rows) != 1 || rows[0].Service != "" || rows[0].Requests != 1 || resp.StatusCode != http.StatusNotFound {
		t.Errorf("status %d, rows %v: want the proxy's 404, one request without a Service", resp.StatusCode, rows)
	}
}

// BenchmarkOutboundHTTP1 is a request through the outbound proxy to an
// upstream on loopback, without and with the report: what the report adds
// to a request.
func BenchmarkOutboundHTTP1(b *testing.B) {
	for _, name := range []string{"report=off", "report=on"} {
		b.Run(name, func(b *testing.B) {
			o := Options{Log: quiet}
			if name == "report=on" {
				o.Report = report.NewRecorder(report.RecorderOptions{})
			}
			addr := outboundProxyWith(b, reportUpstream(b), o)
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Get("http://" + addr + "/api/orders")
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
				}
			})
		})
	}
}
