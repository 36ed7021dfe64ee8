package discovery

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are discovery's own: how many streams it serves and views it
// keeps, how long a round of recomputation takes, and what it sends. They
// exist from NewIndex on; Register exposes them.
type metrics struct {
	streams    *prometheus.GaugeVec
	sent       *prometheus.CounterVec
	refused    *prometheus.CounterVec
	round      prometheus.Histogram
	recomputed *prometheus.CounterVec
	// Pre-resolved children for the hot paths.
	outStreams, inStreams   prometheus.Gauge
	outSent, inSent         prometheus.Counter
	outRecomputed, inRecomp prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_discovery_streams",
			Help: "Discovery streams open, by kind (outbound: a proxy watching a destination; inbound: a proxy watching its own pod).",
		}, []string{"kind"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_discovery_responses_sent_total",
			Help: "Discovery responses sent to proxies, by kind (each a whole new state of one destination or pod).",
		}, []string{"kind"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_discovery_streams_refused_total",
			Help: "Discovery streams refused before they started, by gRPC code (InvalidArgument, Unauthenticated, PermissionDenied, NotFound, FailedPrecondition).",
		}, []string{"code"}),
		round: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "trellis_discovery_recompute_seconds",
			Help:    "Time a round of recomputing the views that cluster changes touched takes, from the lock to the hand-off to the streams.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 4, 10), // 50 µs to 13 s
		}),
		recomputed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_discovery_views_recomputed_total",
			Help: "Views recomputed after cluster changes, by kind; a view is one destination as one namespace sees it, or one pod.",
		}, []string{"kind"}),
	}
	m.outStreams, m.inStreams = m.streams.WithLabelValues("outbound"), m.streams.WithLabelValues("inbound")
	m.outSent, m.inSent = m.sent.WithLabelValues("outbound"), m.sent.WithLabelValues("inbound")
	m.outRecomputed, m.inRecomp = m.recomputed.WithLabelValues("outbound"), m.recomputed.WithLabelValues("inbound")
	return m
}

// Register exposes discovery's metrics on reg: its streams, views,
// recomputation rounds, responses sent, and the objects it indexes.
func (ix *Index) Register(reg prometheus.Registerer) error {
	views := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "trellis_discovery_views",
		Help: "Destinations (as one namespace sees each) and pods that at least one stream watches.",
	}, func() float64 {
		ix.mu.Lock()
		defer ix.mu.Unlock()
		return float64(len(ix.outViews) + len(ix.inViews))
	})
	synced := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "trellis_discovery_synced",
		Help: "1 once discovery holds the whole cluster state and serves streams, else 0.",
	}, func() float64 {
		select {
		case <-ix.synced:
			return 1
		default:
			return 0
		}
	})
	for _, c := range []prometheus.Collector{
		ix.metrics.streams, ix.metrics.sent, ix.metrics.refused, ix.metrics.round, ix.metrics.recomputed,
		views, synced, objectsCollector{ix},
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// objectsCollector reports how many objects of each kind the Index holds,
// read at scrape time.
type objectsCollector struct{ ix *Index }

var objectsDesc = prometheus.NewDesc("trellis_discovery_objects",
	"Objects discovery holds in memory, by kind.", []string{"kind"}, nil)

func (c objectsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- objectsDesc }

func (c objectsCollector) Collect(ch chan<- prometheus.Metric) {
	ix := c.ix
	ix.mu.Lock()
	counts := map[string]int{
		"Service":        len(ix.services),
		"EndpointSlice":  len(ix.slices),
		"Pod":            len(ix.pods),
		"Namespace":      len(ix.nsMesh),
		"ReferenceGrant": len(ix.grants),
		"TrafficPolicy":  len(ix.trafficPolicies),
	}
	for k := range ix.routes {
		counts[k.kind.String()]++
	}
	for _, byName := range ix.authz {
		counts["AuthorizationPolicy"] += len(byName)
	}
	ix.mu.Unlock()
	for kind, n := range counts {
		ch <- prometheus.MustNewConstMetric(objectsDesc, prometheus.GaugeValue, float64(n), kind)
	}
}
