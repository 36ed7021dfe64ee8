package destinations

import (
	"context"
	"testing"
)

// BenchmarkOutboundKnown is the cost that every new outbound connection
// pays to find its destination's state.
func BenchmarkOutboundKnown(b *testing.B) {
	h := newHarness(b)
	h.srv.setOutbound(web, answer("web", "10.0.0.1:8080"))
	ctx := context.Background()
	if _, err := h.c.Outbound(ctx, web); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d, err := h.c.Outbound(ctx, web); err != nil || d.Load() == nil {
				b.Fatal(d, err)
			}
		}
	})
}
