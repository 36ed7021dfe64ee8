package controlplane

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// BenchmarkCertify measures certificates signed per second by one control
// plane, over gRPC and TLS on loopback, client and server in this process.
// Requests come from 16 ServiceAccounts with 8 keys each, 32 calls at a
// time per core on one connection, as many proxies would.
//
// cached-token is the signing path itself: each token was reviewed once
// and is then remembered (the token cache). token-review-per-call makes a
// real TokenReview to the envtest API server on every call, as happens
// when every pod comes with a fresh token (pods starting); it measures the
// API server, which shares the machine, as much as the control plane.
func BenchmarkCertify(b *testing.B) {
	for _, bc := range []struct {
		name     string
		cacheTTL time.Duration
	}{
		{"cached-token", time.Hour},
		{"token-review-per-call", 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := startHarness(b, harnessOptions{cacheTTL: bc.cacheTTL})
			ns := newNamespace(b)
			var reqs []*controlplanev1.CertifyRequest
			for i := range 16 {
				w := newWorkload(b, ns, fmt.Sprintf("sa-%d", i))
				token := w.token(b, TokenAudience)
				for range 8 {
					_, csr := newCSR(b, w.id)
					reqs = append(reqs, &controlplanev1.CertifyRequest{Csr: csr, Token: token})
				}
			}
			client := h.identity(b)
			ctx := context.Background()
			// Connect, and review each token once.
			for _, r := range reqs {
				if _, err := client.Certify(ctx, r); err != nil {
					b.Fatal(err)
				}
			}
			issued := counterValue(h.srv.metrics.issued)

			var next atomic.Uint64
			b.SetParallelism(32)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := reqs[next.Add(1)%uint64(len(reqs))]
					if _, err := client.Certify(ctx, r); err != nil {
						b.Error(err)
						return
					}
				}
			})
			elapsed := time.Since(start)
			b.StopTimer()
			if got := counterValue(h.srv.metrics.issued) - issued; got != float64(b.N) {
				b.Fatalf("%v certificates issued for %d calls", got, b.N)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "certs/s")
		})
	}
}
