package forward

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the forwarders' Prometheus counters, labeled by direction.
// One Metrics serves both forwarders; each resolves its label values once,
// in New, so counting on the connection path is an atomic add.
type Metrics struct {
	opened *prometheus.CounterVec
	closed *prometheus.CounterVec
	bytes  *prometheus.CounterVec
	failed *prometheus.CounterVec
}

// Reasons a connection is closed without being forwarded: the values of the
// reason label of trellis_proxy_tcp_failed_total.
const (
	ReasonNoOriginalDestination = "no_original_destination"
	ReasonNotRedirected         = "not_redirected"
	ReasonConnect               = "connect"
)

// NewMetrics registers the counters with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_tcp_connections_opened_total",
			Help: "TCP connections the proxy accepted on its redirected ports.",
		}, []string{"direction"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_tcp_connections_closed_total",
			Help: "TCP connections the proxy accepted and has since closed, forwarded or not.",
		}, []string{"direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_tcp_bytes_total",
			Help: "Bytes forwarded, by who sent them: the client that opened the connection or the server it reached. Counted in chunks of 256 KiB and at close.",
		}, []string{"direction", "from"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_tcp_failed_total",
			Help: "Accepted TCP connections closed without being forwarded, by reason: no_original_destination, not_redirected (the proxy's port was called directly), connect (the destination could not be reached).",
		}, []string{"direction", "reason"}),
	}
	reg.MustRegister(m.opened, m.closed, m.bytes, m.failed)
	return m
}

// counters are one direction's children of Metrics.
type counters struct {
	opened, closed                     prometheus.Counter
	fromClient, fromServer             prometheus.Counter
	noOriginal, notRedirected, connect prometheus.Counter
}

func (m *Metrics) forDirection(d Direction) counters {
	dir := string(d)
	return counters{
		opened:        m.opened.WithLabelValues(dir),
		closed:        m.closed.WithLabelValues(dir),
		fromClient:    m.bytes.WithLabelValues(dir, "client"),
		fromServer:    m.bytes.WithLabelValues(dir, "server"),
		noOriginal:    m.failed.WithLabelValues(dir, ReasonNoOriginalDestination),
		notRedirected: m.failed.WithLabelValues(dir, ReasonNotRedirected),
		connect:       m.failed.WithLabelValues(dir, ReasonConnect),
	}
}
