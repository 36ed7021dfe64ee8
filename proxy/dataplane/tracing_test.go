package dataplane

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/proxy/tracing"
	"github.com/trellis-mesh/trellis/proxy/tracing/otlptest"
)

// The outbound proxy continues the app's trace: the request leaves with a
// traceparent whose parent is the proxy's span, and that span, child of
// the app's, reaches the OTLP receiver.
func TestOutboundSpan(t *testing.T) {
	rcv := otlptest.Start(t, "127.0.0.1:0")
	tracer, err := tracing.NewExporter(tracing.ExporterOptions{Endpoint: rcv.Addr, Service: "shop/api", SamplingPercent: 100})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go tracer.Run(ctx)

	seen := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("Traceparent")
	}))
	t.Cleanup(srv.Close)
	resp := &controlplanev1.OutboundResponse{
		Known: true, Service: svcRef("web"), Protocol: controlplanev1.Protocol_PROTOCOL_HTTP1,
		Backends: []*controlplanev1.Backend{{Service: svcRef("web"), Endpoints: []*controlplanev1.Endpoint{{Address: strings.TrimPrefix(srv.URL, "http://")}}}},
	}
	addr := outboundProxyWith(t, resp, Options{Log: quiet, Tracer: tracer})
	const trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, _ := http.NewRequest("GET", "http://"+addr+"/traced", nil)
	req.Header.Set("Traceparent", fmt.Sprintf("00-%s-%s-01", trace, parent))
	got, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, got.Body)
	_ = got.Body.Close()
	upstream := <-seen
	parts := strings.Split(upstream, "-")
	if len(parts) != 4 || parts[1] != trace || parts[2] == parent || parts[3] != "01" {
		t.Fatalf("the upstream got traceparent %q: want the same trace, the proxy's span as parent, sampled", upstream)
	}
	spans := rcv.WaitSpans("shop/api", 1, 5*time.Second)
	if len(spans) != 1 {
		t.Fatalf("%d spans reached the receiver, want 1", len(spans))
	}
	if s := spans[0]; hex.EncodeToString(s.TraceId) != trace || hex.EncodeToString(s.ParentSpanId) != parent || hex.EncodeToString(s.SpanId) != parts[2] {
		t.Errorf("exported span %v: want trace %s, parent %s, id %s", s, trace, parent, parts[2])
	}
}
