package traffic

import "github.com/prometheus/client_golang/prometheus"

// metrics are the Store's Prometheus metrics.
type metrics struct {
	rows        prometheus.GaugeFunc
	proxies     prometheus.GaugeFunc
	droppedRows prometheus.Counter
	reports     *prometheus.CounterVec
	accepted    prometheus.Counter
}

func newMetrics(s *Store) *metrics {
	m := &metrics{
		rows: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "trellis_controlplane_traffic_rows",
			Help: "Rows the traffic store holds, over all its buckets (a row: one source, destination, Service, route and mTLS in one 10 s bucket).",
		}, func() float64 { return float64(s.rowCount()) }),
		proxies: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "trellis_controlplane_traffic_proxies",
			Help: "Proxies with a traffic report stream open to this replica.",
		}, func() float64 { return float64(s.proxyCount()) }),
		droppedRows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_controlplane_traffic_rows_dropped_total",
			Help: "Report rows not kept because their bucket held the most rows it may (--traffic-max-rows); the API's numbers miss them.",
		}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_controlplane_traffic_reports_total",
			Help: "Traffic report messages received from proxies, by result: accepted, or the gRPC code they were refused with (the stream ends).",
		}, []string{"result"}),
	}
	m.accepted = m.reports.WithLabelValues("accepted")
	return m
}

// Register registers the Store's metrics with reg.
func (s *Store) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{s.metrics.rows, s.metrics.proxies, s.metrics.droppedRows, s.metrics.reports} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
