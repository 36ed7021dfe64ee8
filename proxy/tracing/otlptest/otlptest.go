// Package otlptest is an OTLP/gRPC trace receiver for tests: a real gRPC
// server with OpenTelemetry's own generated types, so that what the proxy
// encodes by hand is read as a collector reads it. Only tests import it.
package otlptest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// Receiver keeps every export it is sent.
type Receiver struct {
	collectorpb.UnimplementedTraceServiceServer
	// Addr is where it listens, host:port.
	Addr string

	mu       sync.Mutex
	requests []*collectorpb.ExportTraceServiceRequest
	arrived  chan struct{}
}

// Start runs a receiver on addr (such as 127.0.0.1:0) until the test ends.
func Start(t testing.TB, addr string) *Receiver {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{Addr: ln.Addr().String(), arrived: make(chan struct{}, 1)}
	gs := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(gs, r)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return r
}

// Export keeps req.
func (r *Receiver) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	r.requests = append(r.requests, req)
	r.mu.Unlock()
	select {
	case r.arrived <- struct{}{}:
	default:
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// Spans are the spans received so far, by their resource's service.name.
func (r *Receiver) Spans() map[string][]*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]*tracepb.Span{}
	for _, req := range r.requests {
		for _, rs := range req.GetResourceSpans() {
			service := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.Key == "service.name" {
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				out[service] = append(out[service], ss.GetSpans()...)
			}
		}
	}
	return out
}

// WaitSpans waits up to timeout for at least n spans of service, and
// returns those there are.
func (r *Receiver) WaitSpans(service string, n int, timeout time.Duration) []*tracepb.Span {
	deadline := time.After(timeout)
	for {
		if spans := r.Spans()[service]; len(spans) >= n {
			return spans
		}
		select {
		case <-r.arrived:
		case <-deadline:
			return r.Spans()[service]
		}
	}
}
