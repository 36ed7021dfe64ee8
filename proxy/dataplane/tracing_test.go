package dataplane

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/proxy/tracing"
)

type otlpReceiver struct {
	collectorpb.UnimplementedTraceServiceServer
	got chan *collectorpb.ExportTraceServiceRequest
}

func (r *otlpReceiver) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	r.got <- req
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// The outbound proxy continues the app's trace: the request leaves with a
// traceparent whose parent is the proxy's span, and that span, child of
// the app's, reaches the OTLP receiver.
func TestOutboundSpan(t *testing.T) {
	rcv := &otlpReceiver{got: make(chan *collectorpb.ExportTraceServiceRequest, 4)}
	gs := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(gs, rcv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	tracer, err := tracing.NewExporter(tracing.ExporterOptions{Endpoint: ln.Addr().String(), Service: "shop/api", SamplingPercent: 100})
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
	select {
	case exp := <-rcv.got:
		s := exp.GetResourceSpans()[0].GetScopeSpans()[0].GetSpans()[0]
		if hex.EncodeToString(s.TraceId) != trace || hex.EncodeToString(s.ParentSpanId) != parent || hex.EncodeToString(s.SpanId) != parts[2] {
			t.Errorf("exported span %v: want trace %s, parent %s, id %s", s, trace, parent, parts[2])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no span reached the receiver in 5s")
	}
}
