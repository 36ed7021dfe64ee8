package dataplane

import (
	"context"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/destinations"
)

// outIdle is how long a destination's compiled state outlives its last use.
const outIdle = 10 * time.Minute

// outEntry is one destination's compiled state, recompiled when discovery's
// answer changes. Its balancers outlive recompilations, so that endpoints
// keep their latency estimates and backoffs.
type outEntry struct {
	dest *destinations.Destination
	// static is the answer when there is no dest (tests).
	static   *controlplanev1.OutboundResponse
	lastUsed atomic.Int64

	mu        sync.Mutex
	state     atomic.Pointer[outState]
	balancers map[string]*balance.Balancer
	limits    map[string]*limits
	budget    *retryBudget
	// ejected, when set, is told of each endpoint a backend's outlier
	// detection ejects.
	ejected func(service string, ep *controlplanev1.Endpoint, ejections int, d time.Duration)
}

// outState is one answer of discovery, compiled.
type outState struct {
	resp           *controlplanev1.OutboundResponse
	known          bool
	name           string // the Service, <namespace>/<name>:<port>, or the pod's address
	service        string // <namespace>/<name> of the Service; "" for a pod dialed by its address
	protocol       controlplanev1.Protocol
	backends       []*backend
	routes         []*route
	fallback       *route // without routes: every request to backends[0]
	requestTimeout time.Duration
}

// backend is a Service port (or the pod dialed) with its balancer.
type backend struct {
	name           string // <namespace>/<name>:<port>
	service        string // <namespace>/<name>, for metrics
	lb             *balance.Balancer
	limits         *limits
	connectTimeout time.Duration
	children       sync.Map // dst identity → *httpChildren
}

// outEntry returns the compiled state holder of a destination, asking
// discovery about it the first time.
func (p *Proxy) outEntry(ctx context.Context, dest string) (*outEntry, error) {
	p.outMu.Lock()
	e := p.out[dest]
	p.outMu.Unlock()
	if e == nil {
		d, err := p.dests.Outbound(ctx, dest)
		if err != nil {
			return nil, err
		}
		p.outMu.Lock()
		if e = p.out[dest]; e == nil {
			e = newOutEntry(d, nil)
			e.ejected = p.endpointEjected
			p.out[dest] = e
		}
		p.outMu.Unlock()
	}
	e.lastUsed.Store(time.Now().UnixNano())
	return e, nil
}

func newOutEntry(d *destinations.Destination, static *controlplanev1.OutboundResponse) *outEntry {
	return &outEntry{dest: d, static: static, balancers: map[string]*balance.Balancer{}, limits: map[string]*limits{}, budget: newRetryBudget()}
}

// endpointEjected counts and logs an ejection by outlier detection.
func (p *Proxy) endpointEjected(service string, ep *controlplanev1.Endpoint, n int, d time.Duration) {
	p.m.ejections.WithLabelValues(service).Inc()
	p.log.Warn("endpoint ejected: it failed too many requests in a row (TrafficPolicy outlierDetection)",
		"service", service, "endpoint", ep.GetAddress(), "identity", ep.GetIdentity(), "ejectionsInARow", n, "for", d.String())
}

// sweep forgets the destinations not used since before.
func (p *Proxy) sweep(before time.Time) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	for k, e := range p.out {
		if e.lastUsed.Load() < before.UnixNano() {
			delete(p.out, k)
		}
	}
}

// current is the entry's state for discovery's latest answer.
func (e *outEntry) current() *outState {
	resp := e.static
	if e.dest != nil {
		resp = e.dest.Load()
	}
	if st := e.state.Load(); st != nil && st.resp == resp {
		return st
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if st := e.state.Load(); st != nil && st.resp == resp {
		return st
	}
	st := e.compile(resp)
	e.state.Store(st)
	return st
}

func (e *outEntry) compile(resp *controlplanev1.OutboundResponse) *outState {
	st := &outState{resp: resp, known: resp.GetKnown() && len(resp.GetBackends()) > 0, protocol: resp.GetProtocol()}
	if s := resp.GetService(); s != nil {
		st.name, st.service = serviceName(s), s.Namespace+"/"+s.Name
	}
	if t := resp.GetPolicy().GetRequestTimeout(); t != nil {
		st.requestTimeout = t.AsDuration()
	}
	if pol := resp.GetPolicy(); pol != nil {
		e.budget.set(pol.RetryBudgetPercent, pol.RetryBudgetMinPerSecond)
	} else {
		e.budget.set(20, 10)
	}
	used := map[string]bool{}
	for i, b := range resp.GetBackends() {
		key := "svc:" + serviceName(b.GetService())
		if b.GetService() == nil {
			key = "pod:" + firstAddress(b)
		}
		used[key] = true
		lb := e.balancers[key]
		if lb == nil {
			opts := balance.Options{Algorithm: balance.AlgorithmFrom(b.GetPolicy().GetLoadBalancer())}
			if e.ejected != nil {
				svc := serviceName(b.GetService())
				opts.OnEject = func(ep *controlplanev1.Endpoint, n int, d time.Duration) { e.ejected(svc, ep, n, d) }
			}
			lb = balance.New(opts)
			e.balancers[key] = lb
		}
		lb.Update(b.GetEndpoints())
		lb.SetOutlier(outlierOf(b.GetPolicy()))
		lim := e.limits[key]
		if lim == nil {
			lim = &limits{}
			e.limits[key] = lim
		}
		lim.maxRequests.Store(int64(b.GetPolicy().GetMaxPendingRequests()))
		lim.maxConns.Store(int64(b.GetPolicy().GetMaxConnections()))
		be := &backend{name: serviceName(b.GetService()), lb: lb, limits: lim}
		if s := b.GetService(); s != nil {
			be.service = s.Namespace + "/" + s.Name
		} else {
			be.name = firstAddress(b)
		}
		if t := b.GetPolicy().GetConnectTimeout(); t != nil {
			be.connectTimeout = t.AsDuration()
		}
		if i == 0 && st.name == "" {
			st.name = be.name
		}
		st.backends = append(st.backends, be)
	}
	for k := range e.balancers {
		if !used[k] {
			delete(e.balancers, k)
			delete(e.limits, k)
		}
	}
	for _, r := range resp.GetRoutes() {
		st.routes = append(st.routes, compileRoute(r, st.backends))
	}
	if len(st.backends) > 0 {
		st.fallback = &route{name: st.name, backends: []*weighted{{b: st.backends[0], weight: 1}}, total: 1}
	}
	return st
}

// outlierOf is a backend's circuit breaking, from its TrafficPolicy; nil
// without one. Ejections end when their time is over, not at the next
// review of outlier_interval: the proxy checks at every pick.
func outlierOf(p *controlplanev1.TrafficPolicy) *balance.Outlier {
	if p.GetConsecutiveErrors() == 0 {
		return nil
	}
	return &balance.Outlier{
		ConsecutiveErrors:  int(p.ConsecutiveErrors),
		BaseEjection:       p.GetBaseEjectionTime().AsDuration(),
		MaxEjectionPercent: int(p.MaxEjectionPercent),
	}
}

func serviceName(s *controlplanev1.ServiceRef) string {
	if s == nil {
		return ""
	}
	return s.Namespace + "/" + s.Name + ":" + itoa(s.Port)
}

func firstAddress(b *controlplanev1.Backend) string {
	if eps := b.GetEndpoints(); len(eps) > 0 {
		return eps[0].Address
	}
	return ""
}

func itoa(n uint32) string {
	var buf [10]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(buf[i:])
		}
	}
}

// route is a compiled Route.
type route struct {
	name string
	// ref is <namespace>/<name> of the HTTPRoute or GRPCRoute, for the
	// report; "" for the fallback.
	ref string
	// rows are the report rows of this route's requests, by endpoint
	// (*controlplanev1.Endpoint → *report.Row; noEndpoint for the
	// proxy's own answers).
	rows     sync.Map
	matches  []match
	backends []*weighted
	total    uint32
	timeout  time.Duration

	requestHeaders, responseHeaders headerMods
	redirect                        *controlplanev1.Redirect
	rewrite                         *controlplanev1.Rewrite
	retry                           *retryPolicy
}

// weighted is a route's backend with its weight and its own filters.
type weighted struct {
	b                               *backend
	weight                          uint32
	requestHeaders, responseHeaders headerMods
}

// retryPolicy is a route's Retry: how many more times, on which statuses
// (connection failures always), after how long.
type retryPolicy struct {
	attempts int
	codes    map[int]bool
	backoff  time.Duration
}

type match struct {
	pathKind    controlplanev1.PathMatch_Kind
	path        string
	pathRe      *regexp.Regexp
	headers     []valueMatch
	queries     []valueMatch
	method      string
	grpcService string
	grpcMethod  string
}

type valueMatch struct {
	name  string
	value string
	re    *regexp.Regexp
}

func (v valueMatch) holds(got string, ok bool) bool {
	if !ok {
		return false
	}
	if v.re != nil {
		return v.re.MatchString(got)
	}
	return got == v.value
}

// compileRoute compiles r. A regular expression that does not compile
// (the control plane checks them, so only a newer control plane's dialect
// could) matches nothing.
func compileRoute(r *controlplanev1.Route, backends []*backend) *route {
	out := &route{
		name:            r.Name,
		ref:             routeRef(r.Name),
		requestHeaders:  r.RequestHeaders,
		responseHeaders: r.ResponseHeaders,
		redirect:        r.Redirect,
		rewrite:         r.Rewrite,
	}
	if t := r.GetTimeout(); t != nil {
		out.timeout = t.AsDuration()
	}
	if rt := r.GetRetry(); rt != nil && rt.Attempts > 0 {
		out.retry = &retryPolicy{attempts: int(rt.Attempts), codes: map[int]bool{}, backoff: 25 * time.Millisecond}
		for _, c := range rt.Codes {
			out.retry.codes[int(c)] = true
		}
		if b := rt.GetBackoff(); b != nil {
			out.retry.backoff = b.AsDuration()
		}
	}
	for _, wb := range r.GetBackends() {
		if int(wb.Backend) >= len(backends) || wb.Weight == 0 {
			continue
		}
		out.backends = append(out.backends, &weighted{b: backends[wb.Backend], weight: wb.Weight, requestHeaders: wb.RequestHeaders, responseHeaders: wb.ResponseHeaders})
		out.total += wb.Weight
	}
	for _, m := range r.GetMatches() {
		cm := match{method: m.Method, grpcService: m.GrpcService, grpcMethod: m.GrpcMethod}
		if pm := m.GetPath(); pm != nil {
			cm.pathKind, cm.path = pm.Kind, pm.Value
			if pm.Kind == controlplanev1.PathMatch_KIND_REGEX {
				cm.pathRe = anchored(pm.Value)
			}
		}
		for _, h := range m.GetHeaders() {
			cm.headers = append(cm.headers, compileValue(h))
		}
		for _, q := range m.GetQueryParams() {
			cm.queries = append(cm.queries, compileValue(q))
		}
		out.matches = append(out.matches, cm)
	}
	return out
}

func compileValue(h *controlplanev1.HeaderMatch) valueMatch {
	v := valueMatch{name: h.Name, value: h.Value}
	if h.Regex {
		v.re = anchored(h.Value)
	}
	return v
}

// nothing matches no string.
var nothing = regexp.MustCompile(`[^\x00-\x{10FFFF}]`)

// anchored compiles re to match whole strings, as the Gateway API's
// RegularExpression matches are read by Envoy-based meshes.
func anchored(re string) *regexp.Regexp {
	c, err := regexp.Compile("^(?:" + re + ")$")
	if err != nil {
		return nothing
	}
	return c
}

// route is the first route whose match holds for r, and the path prefix
// that match matched ("" unless it is a PathPrefix match), for prefix
// rewrites. Without routes, every request goes to the destination's first
// backend; with some, a request that none matches has no route.
func (st *outState) route(r *http.Request) (rt *route, prefix string, ok bool) {
	if len(st.routes) == 0 {
		return st.fallback, "", st.fallback != nil
	}
	for _, rt := range st.routes {
		if prefix, ok := rt.holds(r); ok {
			return rt, prefix, true
		}
	}
	return nil, "", false
}

func (rt *route) holds(r *http.Request) (prefix string, ok bool) {
	if len(rt.matches) == 0 {
		return "", true
	}
	for i := range rt.matches {
		if m := &rt.matches[i]; m.holds(r) {
			if m.pathKind == controlplanev1.PathMatch_KIND_PREFIX {
				prefix = m.path
			}
			return prefix, true
		}
	}
	return "", false
}

func (m *match) holds(r *http.Request) bool {
	path := r.URL.Path
	switch m.pathKind {
	case controlplanev1.PathMatch_KIND_EXACT:
		if path != m.path {
			return false
		}
	case controlplanev1.PathMatch_KIND_PREFIX:
		if !pathPrefix(path, m.path) {
			return false
		}
	case controlplanev1.PathMatch_KIND_REGEX:
		if !m.pathRe.MatchString(path) {
			return false
		}
	}
	if m.method != "" && r.Method != m.method {
		return false
	}
	if m.grpcService != "" || m.grpcMethod != "" {
		svc, method, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
		if !ok || (m.grpcService != "" && svc != m.grpcService) || (m.grpcMethod != "" && method != m.grpcMethod) {
			return false
		}
	}
	for _, h := range m.headers {
		vs := r.Header.Values(h.name)
		got := strings.Join(vs, ",")
		if !h.holds(got, len(vs) > 0) {
			return false
		}
	}
	if len(m.queries) > 0 {
		q := r.URL.Query()
		for _, qm := range m.queries {
			vs, ok := q[qm.name]
			got := ""
			if ok && len(vs) > 0 {
				got = vs[0]
			}
			if !qm.holds(got, ok) {
				return false
			}
		}
	}
	return true
}

// pathPrefix is the Gateway API's PathPrefix: by whole path elements, so
// /foo matches /foo and /foo/bar, not /foobar.
func pathPrefix(path, prefix string) bool {
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix == "" {
		return true
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}

// pickBackend picks one of the route's backends by weight; nil when it has
// none with weight.
func (rt *route) pickBackend() *weighted {
	switch {
	case rt.total == 0:
		return nil
	case len(rt.backends) == 1:
		return rt.backends[0]
	}
	n := rand.Uint32N(rt.total)
	for _, w := range rt.backends {
		if n < w.weight {
			return w
		}
		n -= w.weight
	}
	return rt.backends[len(rt.backends)-1]
}

// limits are a backend's connection limits from its TrafficPolicy, per
// client proxy, kept across recompilations like its balancer: requests in
// flight (max_pending_requests: with HTTP/2 between proxies nothing waits
// for a connection, so the proxy bounds what is outstanding) and opaque
// connections open (max_connections). 0 is no limit.
type limits struct {
	requests, conns       atomic.Int64
	maxRequests, maxConns atomic.Int64
}

// take counts one more against counter unless that passes limit.
func take(counter, limit *atomic.Int64) bool {
	n := counter.Add(1)
	if m := limit.Load(); m > 0 && n > m {
		counter.Add(-1)
		return false
	}
	return true
}
