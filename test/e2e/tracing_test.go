//go:build e2e

package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// nodeIP is the local cluster node's address on its own bridge: pods reach
// the host there.
const nodeIP = "10.250.0.1"

// spanSink is an OTLP/gRPC receiver that keeps what it is sent.
type spanSink struct {
	collectorpb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans map[string][]*tracepb.Span // by service.name
}

func (s *spanSink) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			s.spans[service] = append(s.spans[service], ss.GetSpans()...)
		}
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// joined counts the converter's server spans whose parent is one of the
// API's client spans: the two proxies of one call, in one trace.
func (s *spanSink) joined() (client, server, joined int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clients := map[string]bool{}
	for _, sp := range s.spans[meshedNamespace+"/temperature-api"] {
		if sp.Kind == tracepb.Span_SPAN_KIND_CLIENT {
			clients[hex.EncodeToString(sp.TraceId)+"/"+hex.EncodeToString(sp.SpanId)] = true
			client++
		}
	}
	for _, sp := range s.spans[meshedNamespace+"/converter"] {
		if sp.Kind == tracepb.Span_SPAN_KIND_SERVER {
			server++
			if clients[hex.EncodeToString(sp.TraceId)+"/"+hex.EncodeToString(sp.ParentSpanId)] {
				joined++
			}
		}
	}
	return client, server, joined
}

// TestSpansReachAnOTLPReceiver: with the Mesh's tracing pointed at a
// receiver that the test runs, the API's proxy and the converters' proxies
// export a span for each call, joined in one trace.
func TestSpansReachAnOTLPReceiver(t *testing.T) {
	sink := &spanSink{spans: map[string][]*tracepb.Span{}}
	gs := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(gs, sink)
	ln, err := net.Listen("tcp", nodeIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()

	// The routes of the tests before must not get in the way.
	kubectl(t, "-n", meshedNamespace, "delete", "httproute,grpcroute", "--all", "--ignore-not-found")
	kubectl(t, "patch", "mesh", "default", "--type=merge", "-p",
		fmt.Sprintf(`{"spec":{"telemetry":{"tracing":{"endpoint":%q,"samplingPercent":100}}}}`, ln.Addr().String()))
	defer kubectl(t, "patch", "mesh", "default", "--type=json", "-p", `[{"op":"remove","path":"/spec/telemetry/tracing"}]`)
	// Proxies read the Mesh's telemetry when their pod is injected.
	kubectl(t, "-n", meshedNamespace, "rollout", "restart", "deployment")
	for _, d := range []string{"temperature-api", "converter-v1", "converter-v2"} {
		kubectl(t, "-n", meshedNamespace, "rollout", "status", "deployment/"+d, "--timeout=180s")
	}
	waitForAnswer(t, meshedNamespace)

	deadline := time.Now().Add(60 * time.Second)
	for {
		client, server, joined := sink.joined()
		if joined >= 5 {
			t.Logf("the receiver has %d client spans of the API and %d server spans of the converters, %d of them joined", client, server, joined)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a minute the receiver has %d client spans of the API and %d server spans of the converters, %d joined; want 5 joined", client, server, joined)
		}
		// Calls from this node: the API's proxy starts a trace for each.
		waitForAnswer(t, meshedNamespace)
		time.Sleep(500 * time.Millisecond)
	}
}
