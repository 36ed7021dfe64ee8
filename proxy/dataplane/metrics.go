package dataplane

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/ca"
	"github.com/trellis-mesh/trellis/proxy/detect"
)

const (
	outboundDir = "outbound"
	inboundDir  = "inbound"

	reasonPlaintext = "plaintext_in_strict_mode"
	reasonHandshake = "tls_handshake"
)

// Metrics are the data plane's Prometheus metrics. Their children for a
// destination or a calling workload are resolved once and kept, so that a
// request only adds to counters.
type Metrics struct {
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	protocols *prometheus.CounterVec
	tcp       *prometheus.CounterVec
	refusals  *prometheus.CounterVec
	handshake *prometheus.CounterVec
	retries   *prometheus.CounterVec
	denials   *prometheus.CounterVec
	overflows *prometheus.CounterVec
	ejections *prometheus.CounterVec

	local    sync.Map // outbound responses the proxy made itself, by destination and status → *httpChildren
	in       sync.Map // inbound, by peer → *httpChildren
	tcpPeers sync.Map // tcp's children, by direction, peer and mTLS → prometheus.Counter
	byProto  map[string][3]prometheus.Counter
}

// NewMetrics registers the metrics with reg; with a nil reg they are kept
// but not exposed.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_http_responses_total",
			Help: "HTTP responses, by direction, source and destination workload (<namespace>/<service account> of the identities; empty for a peer outside the mesh), destination Service, and status class (2xx...; the proxy's own answers included).",
		}, []string{"direction", "src_workload", "dst_workload", "dst_service", "status_class"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "trellis_proxy_http_request_duration_seconds",
			Help:    "Time from a request's arrival at the proxy to its response's end, by direction, source and destination workload and destination Service.",
			Buckets: []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10},
		}, []string{"direction", "src_workload", "dst_workload", "dst_service"}),
		protocols: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_connections_by_protocol_total",
			Help: "Connections to known destinations (outbound) and from any client (inbound), by the protocol detected: http1, http2 or opaque.",
		}, []string{"direction", "protocol"}),
		tcp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_tcp_routed_total",
			Help: "Opaque TCP connections relayed to a mesh destination (outbound: by destination Service) or from a peer proxy (inbound: by its workload), and whether in mutual TLS.",
		}, []string{"direction", "peer", "mtls"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_inbound_refused_total",
			Help: "Inbound connections refused, by reason: plaintext_in_strict_mode, tls_handshake (a peer whose certificate or identity did not check out).",
		}, []string{"reason"}),
		handshake: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_tls_handshake_failures_total",
			Help: "Mutual TLS handshakes with peer proxies that failed, by direction (outbound: the server's identity or chain did not check out, or it could not be reached in time).",
		}, []string{"direction"}),
	}
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_http_retries_total",
		Help: "Retries that routes asked for, by destination Service, and whether the retry budget allowed them (sent) or not (budget_exhausted: the failure went back as it came).",
	}, []string{"dst_service", "result"})
	m.denials = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_authorization_denied_total",
		Help: "Inbound requests (protocol http, answered 403) and connections (tcp, closed) that the pod's AuthorizationPolicies denied, by the rule that did (namespace/policy/index; empty for the default deny).",
	}, []string{"protocol", "rule"})
	m.overflows = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_overflow_total",
		Help: "Requests answered 503 (limit requests) and connections closed (limit connections) because a destination's TrafficPolicy connection limits were reached, by destination Service.",
	}, []string{"dst_service", "limit"})
	m.ejections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_outlier_ejections_total",
		Help: "Endpoints ejected by outlier detection (a backend's TrafficPolicy: that many failures in a row), by destination Service (<namespace>/<name>:<port>).",
	}, []string{"dst_service"})
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.protocols, m.tcp, m.refusals, m.handshake, m.retries, m.denials, m.overflows, m.ejections)
	}
	m.byProto = map[string][3]prometheus.Counter{}
	for _, dir := range []string{outboundDir, inboundDir} {
		var cs [3]prometheus.Counter
		for _, p := range []detect.Protocol{detect.Opaque, detect.HTTP1, detect.HTTP2} {
			cs[p] = m.protocols.WithLabelValues(dir, p.String())
		}
		m.byProto[dir] = cs
	}
	return m
}

// httpChildren are the request metrics of one source, destination and Service.
type httpChildren struct {
	byClass [6]prometheus.Counter // 1xx..5xx; [0] for anything else
	latency prometheus.Observer
}

func (m *Metrics) children(dir, src, dst, svc string) *httpChildren {
	n := &httpChildren{latency: m.latency.WithLabelValues(dir, src, dst, svc)}
	for i, class := range []string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		n.byClass[i] = m.requests.WithLabelValues(dir, src, dst, svc, class)
	}
	return n
}

func (n *httpChildren) observe(status int, start time.Time) {
	class := status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	n.byClass[class].Inc()
	n.latency.Observe(time.Since(start).Seconds())
}

// workloadOf is the <namespace>/<service account> of a SPIFFE ID, or "".
func workloadOf(id string) string {
	if id == "" {
		return ""
	}
	_, ns, sa, err := ca.ParseSPIFFEID(id)
	if err != nil {
		return "unknown"
	}
	return ns + "/" + sa
}

// outboundChildren are the metrics of requests from this pod to an
// endpoint of b holding identity id.
func (m *Metrics) outboundChildren(src string, b *backend, id string) *httpChildren {
	if n, ok := b.children.Load(id); ok {
		return n.(*httpChildren)
	}
	n, _ := b.children.LoadOrStore(id, m.children(outboundDir, src, workloadOf(id), b.service))
	return n.(*httpChildren)
}

// inboundChildren are the metrics of requests from peer to this pod.
func (m *Metrics) inboundChildren(peer, self string) *httpChildren {
	if n, ok := m.in.Load(peer); ok {
		return n.(*httpChildren)
	}
	n, _ := m.in.LoadOrStore(peer, m.children(inboundDir, workloadOf(peer), self, ""))
	return n.(*httpChildren)
}

// outboundLocal counts a response the proxy made itself for a request to
// st, without an endpoint.
func (m *Metrics) outboundLocal(src string, st *outState, status int) {
	svc := strings.SplitN(st.name, ":", 2)[0]
	key := svc + "|" + itoa(uint32(status))
	n, ok := m.local.Load(key)
	if !ok {
		n, _ = m.local.LoadOrStore(key, m.children(outboundDir, src, "", svc))
	}
	n.(*httpChildren).byClass[status/100].Inc()
}

func (m *Metrics) detected(dir string, p detect.Protocol) {
	m.byProto[dir][p].Inc()
}

func (m *Metrics) tcpOpened(dir, peer string, mtls bool) {
	if dir == inboundDir {
		peer = workloadOf(peer)
	}
	v := "false"
	if mtls {
		v = "true"
	}
	key := dir + "|" + peer + "|" + v
	c, ok := m.tcpPeers.Load(key)
	if !ok {
		c, _ = m.tcpPeers.LoadOrStore(key, m.tcp.WithLabelValues(dir, peer, v))
	}
	c.(prometheus.Counter).Inc()
}

func (m *Metrics) refused(reason string) { m.refusals.WithLabelValues(reason).Inc() }

func (m *Metrics) tlsFailed(dir string) { m.handshake.WithLabelValues(dir).Inc() }

// retried counts a retry a route asked for, sent or refused by the budget.
func (m *Metrics) retried(svc string, sent bool) {
	result := "budget_exhausted"
	if sent {
		result = "sent"
	}
	m.retries.WithLabelValues(svc, result).Inc()
}

// denied counts a request or connection the pod's policies denied.
func (m *Metrics) denied(protocol, rule string) { m.denials.WithLabelValues(protocol, rule).Inc() }

// overflowed counts a request or connection over a connection limit.
func (m *Metrics) overflowed(svc, limit string) { m.overflows.WithLabelValues(svc, limit).Inc() }
