package tracing

import (
	"context"
	"encoding/hex"
	"net/http"
	"strconv"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/trellis-mesh/trellis/proxy/tracing/otlptest"
)

func TestExtractInject(t *testing.T) {
	h := http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	c, ok := Extract(h)
	if !ok || c.Trace.String() != "4bf92f3577b34da6a3ce929d0e0e4736" || c.Parent.String() != "00f067aa0ba902b7" || !c.Sampled {
		t.Fatalf("Extract: %+v %v", c, ok)
	}
	for _, bad := range []string{
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
		"garbage",
	} {
		if _, ok := Extract(http.Header{"Traceparent": {bad}}); ok {
			t.Errorf("Extract accepted %q", bad)
		}
	}
	// A later version's first four fields are read.
	if _, ok := Extract(http.Header{"Traceparent": {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what"}}); !ok {
		t.Error("a later version was refused")
	}
	// B3, single and multi.
	if c, ok := Extract(http.Header{"B3": {"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"}}); !ok || !c.Sampled || c.Parent.String() != "e457b5a2e4d86bd1" {
		t.Errorf("single B3: %+v %v", c, ok)
	}
	if c, ok := Extract(http.Header{"X-B3-Traceid": {"463ac35c9f6413ad"}, "X-B3-Spanid": {"a2fb4a1d1a96d312"}, "X-B3-Sampled": {"1"}}); !ok || c.Trace.String() != "0000000000000000463ac35c9f6413ad" {
		t.Errorf("multi B3 with a 64-bit trace ID: %+v %v", c, ok)
	}

	out := http.Header{"X-B3-Traceid": {"x"}, "X-B3-Parentspanid": {"y"}}
	span := NewSpanID()
	Inject(out, c.Trace, span, true)
	if out.Get("Traceparent") != "00-"+c.Trace.String()+"-"+span.String()+"-01" || out.Get("X-B3-Spanid") != span.String() || out.Get("X-B3-Parentspanid") != "" {
		t.Errorf("Inject: %v", out)
	}
}

func TestSample(t *testing.T) {
	sampled := 0
	for range 10000 {
		if Sample(NewTraceID(), 10) {
			sampled++
		}
	}
	if sampled < 800 || sampled > 1200 {
		t.Errorf("10%% sampling kept %d of 10000", sampled)
	}
	id := NewTraceID()
	if Sample(id, 0) || !Sample(id, 100) {
		t.Error("Sample at 0% or 100% is not none or all")
	}
	// By the trace ID alone: every proxy on the way decides the same.
	var low TraceID
	low[15] = 5 // 5 of 10000: under 1%
	if !Sample(low, 1) || Sample(low, 0.01) {
		t.Error("Sample does not decide by the trace ID's low bits")
	}
}

// What the exporter writes by hand is what OTLP's own types read, sent to
// a real OTLP/gRPC receiver.
func TestExportToAnOTLPReceiver(t *testing.T) {
	rcv := otlptest.Start(t, "127.0.0.1:0")
	e, err := NewExporter(ExporterOptions{Endpoint: rcv.Addr, Service: "shop/api", SamplingPercent: 100})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx)
	start := time.Unix(1_800_000_000, 123)
	trace, parent, id := NewTraceID(), NewSpanID(), NewSpanID()
	e.Export(Span{Trace: trace, ID: id, Parent: parent, Name: "GET shop/web:80", Kind: KindClient, Start: start, End: start.Add(3 * time.Millisecond),
		Attributes: map[string]string{"url.path": "/orders"}, Status: 503, Error: true})

	spans := rcv.WaitSpans("shop/api", 1, 5*time.Second)
	if len(spans) != 1 {
		t.Fatalf("spans: %v", spans)
	}
	s := spans[0]
	if hex.EncodeToString(s.TraceId) != trace.String() || hex.EncodeToString(s.SpanId) != id.String() || hex.EncodeToString(s.ParentSpanId) != parent.String() ||
		s.Name != "GET shop/web:80" || s.Kind != tracepb.Span_SPAN_KIND_CLIENT ||
		s.StartTimeUnixNano != uint64(start.UnixNano()) || s.EndTimeUnixNano-s.StartTimeUnixNano != uint64(3*time.Millisecond) ||
		s.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("span as OTLP reads it: %v", s)
	}
	attrs := map[string]string{}
	for _, kv := range s.Attributes {
		switch {
		case kv.Value.GetStringValue() != "":
			attrs[kv.Key] = kv.Value.GetStringValue()
		default:
			attrs[kv.Key] = "int:" + strconv.FormatInt(kv.Value.GetIntValue(), 10)
		}
	}
	if attrs["url.path"] != "/orders" || attrs["http.response.status_code"] != "int:503" {
		t.Errorf("attributes %v", attrs)
	}
}
