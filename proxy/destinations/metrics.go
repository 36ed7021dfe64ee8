package destinations

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The values of the kind label.
const (
	kindOutbound = "outbound"
	kindInbound  = "inbound"
)

// metrics are the client's Prometheus metrics, each child resolved once.
type metrics struct {
	destinations      prometheus.Gauge
	outbound, inbound kindMetrics
}

// kindMetrics are one kind's children.
type kindMetrics struct {
	streams    prometheus.Gauge
	updates    prometheus.Counter
	reconnects prometheus.Counter
}

// newMetrics registers the metrics with reg, unless reg is nil.
func newMetrics(reg prometheus.Registerer) *metrics {
	streams := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trellis_proxy_discovery_streams",
		Help: "Discovery streams open to the control plane, by kind (outbound: one per destination; inbound: the proxy's own pod).",
	}, []string{"kind"})
	updates := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_discovery_updates_total",
		Help: "Discovery answers that changed the proxy's state, by kind; answers equal to the last one are not counted.",
	}, []string{"kind"})
	reconnects := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_discovery_reconnects_total",
		Help: "Discovery streams opened again after one ended or failed to open, by kind.",
	}, []string{"kind"})
	destinations := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "trellis_proxy_discovery_destinations",
		Help: "Destinations the proxy watches: those its app dialed within the idle timeout.",
	})
	if reg != nil {
		reg.MustRegister(streams, updates, reconnects, destinations)
	}
	kind := func(k string) kindMetrics {
		return kindMetrics{
			streams:    streams.WithLabelValues(k),
			updates:    updates.WithLabelValues(k),
			reconnects: reconnects.WithLabelValues(k),
		}
	}
	return &metrics{
		destinations: destinations,
		outbound:     kind(kindOutbound),
		inbound:      kind(kindInbound),
	}
}
