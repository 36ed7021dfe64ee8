package identity

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are resolved once; without a Registerer they count all the same,
// unexported.
type metrics struct {
	expiry prometheus.Gauge
	issued prometheus.Counter
	failed prometheus.Counter
	roots  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_certificate_requests_total",
		Help: "Certify calls by result: issued (a usable certificate), failed (refused, unreachable, or an unusable certificate).",
	}, []string{"result"})
	m := metrics{
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_proxy_certificate_expiry_timestamp_seconds",
			Help: "When the proxy's current workload certificate expires, in Unix seconds; 0 before the first.",
		}),
		issued: requests.WithLabelValues("issued"),
		failed: requests.WithLabelValues("failed"),
		roots: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_proxy_trust_bundle_roots",
			Help: "Roots the proxy trusts: those of the trust bundle file and of the last certificate response.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.expiry, requests, m.roots} {
		if err := reg.Register(c); err != nil {
			return metrics{}, fmt.Errorf("identity: registering metrics with Options.Registerer: %w; use one Manager per registry", err)
		}
	}
	return m, nil
}
