package traffic

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// Handler serves the API (api.go) under /api/v1/.
func (s *Store) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathStat, s.serveStat)
	mux.HandleFunc("GET "+PathEdges, s.serveEdges)
	mux.HandleFunc("GET "+PathTop, s.serveTop)
	mux.HandleFunc("GET "+PathProxies, s.serveProxies)
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func badRequest(w http.ResponseWriter, format string, args ...any) {
	writeJSON(w, http.StatusBadRequest, ErrorResponse{Error: fmt.Sprintf(format, args...)})
}

// window reads the window parameter: DefaultWindow when absent, rounded
// up to whole buckets.
func window(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("window")
	if v == "" {
		return DefaultWindow, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < MinWindow || d > MaxWindow {
		return 0, fmt.Errorf("window=%q: want a duration from %s to %s, such as 1m", v, MinWindow, MaxWindow)
	}
	return (d + BucketWidth - 1) / BucketWidth * BucketWidth, nil
}

// query is an API request's common parameters.
type query struct {
	namespace string
	window    time.Duration
	// local is scope=local: this replica's proxies only.
	local bool
}

func parseQuery(w http.ResponseWriter, r *http.Request) (query, bool) {
	win, err := window(r)
	if err != nil {
		badRequest(w, "%v", err)
		return query{}, false
	}
	ns, ok := parseNamespace(w, r)
	if !ok {
		return query{}, false
	}
	local, ok := parseScope(w, r)
	return query{namespace: ns, window: win, local: local}, ok
}

func parseNamespace(w http.ResponseWriter, r *http.Request) (string, bool) {
	ns := r.URL.Query().Get("namespace")
	if len(ns) > 63 {
		badRequest(w, "namespace=%q is longer than a namespace name can be (63)", ns)
		return "", false
	}
	return ns, true
}

// parseScope reads the scope parameter: whether the answer is this
// replica's proxies' only.
func parseScope(w http.ResponseWriter, r *http.Request) (local bool, ok bool) {
	switch v := r.URL.Query().Get("scope"); v {
	case "", ScopeMesh:
		return false, true
	case ScopeLocal:
		return true, true
	default:
		badRequest(w, "scope=%q: want mesh (every replica's proxies, the default) or local (this replica's)", v)
		return false, false
	}
}

// snapshot is the window's rows summed, the proxies, and when the window
// starts, under the lock.
func (s *Store) snapshot(win time.Duration) (map[aggKey]*counts, []proxyRecord, time.Time) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	first, last := s.settledRange(win, now)
	rows := s.sum(first, last)
	proxies := make([]proxyRecord, 0, len(s.proxies))
	for _, p := range s.proxies {
		proxies = append(proxies, *p)
	}
	return rows, proxies, time.Unix(0, first*int64(BucketWidth))
}

// group is a StatRow or Edge being summed.
type group struct {
	c    counts
	pods map[string]struct{}
}

func (g *group) add(c *counts, pod string) {
	g.c.add(c, 1)
	if pod != "" {
		if g.pods == nil {
			g.pods = map[string]struct{}{}
		}
		g.pods[pod] = struct{}{}
	}
}

// numbers are the numbers of a StatRow or an Edge.
type numbers struct {
	requests    uint64
	rps         float64
	success     *float64
	lat         *Latency
	hist        *LatencyHistogram
	in, out, tc uint64
}

// fill is the numbers of c over win.
func fill(c *counts, win time.Duration) numbers {
	n := numbers{
		requests: uint64(math.Round(c.requests)),
		rps:      c.requests / win.Seconds(),
		in:       uint64(math.Round(c.reqBytes)),
		out:      uint64(math.Round(c.respBytes)),
		tc:       uint64(math.Round(c.tcp)),
	}
	if c.requests >= 0.5 {
		sr := min(c.successes/c.requests, 1)
		n.success = &sr
		if p50 := c.latency.Quantile(0.5); !math.IsNaN(p50) {
			n.lat = &Latency{P50: p50, P95: c.latency.Quantile(0.95), P99: c.latency.Quantile(0.99)}
			n.hist = apiHistogram(c.latency)
		}
	}
	return n
}

func (n numbers) setRow(row *StatRow) {
	row.Requests, row.RPS, row.SuccessRate, row.LatencyMs, row.LatencyHistogram = n.requests, n.rps, n.success, n.lat, n.hist
	row.BytesIn, row.BytesOut, row.TCPConnections = n.in, n.out, n.tc
}

func (n numbers) setEdge(e *Edge) {
	e.Requests, e.RPS, e.SuccessRate, e.LatencyMs, e.LatencyHistogram = n.requests, n.rps, n.success, n.lat, n.hist
	e.BytesIn, e.BytesOut, e.TCPConnections = n.in, n.out, n.tc
}

func statRow(kind, ns, name string, g *group, win time.Duration) StatRow {
	row := StatRow{Kind: kind, Namespace: ns, Name: name, MeshedPods: len(g.pods)}
	fill(&g.c, win).setRow(&row)
	return row
}

// stat groups the window's rows by kind.
func (s *Store) stat(q query, kind string) []StatRow {
	rows, proxies, since := s.snapshot(q.window)
	type name struct{ ns, name, kind string }
	groups := map[name]*group{}
	get := func(n name) *group {
		g := groups[n]
		if g == nil {
			g = &group{}
			groups[n] = g
		}
		return g
	}
	switch kind {
	case KindWorkload:
		// The server's view: what each workload's pods served. Every
		// workload with a proxy that reported since the window's start
		// has a row, traffic or not.
		for _, p := range proxies {
			if p.streams > 0 || !p.status.LastReportAt.Before(since) {
				get(name{p.status.Namespace, p.status.Workload, p.status.WorkloadKind}).add(&counts{}, p.status.Pod)
			}
		}
		for k, c := range rows {
			if k.dir == controlplanev1.Direction_DIRECTION_INBOUND {
				get(name{k.dstNamespace, k.dstWorkload, k.dstWorkloadKind}).c.add(c, 1)
			}
		}
	case KindService, KindRoute:
		// The client's view: only the caller's proxy knows the Service
		// and route a request was for.
		for k, c := range rows {
			ref := k.service
			if kind == KindRoute {
				ref = k.route
			}
			ns, n, ok := strings.Cut(ref, "/")
			if k.dir != controlplanev1.Direction_DIRECTION_OUTBOUND || !ok {
				continue
			}
			get(name{ns, n, ""}).add(c, k.dstPod)
		}
	}
	var out []StatRow
	for n, g := range groups {
		if q.namespace != "" && n.ns != q.namespace {
			continue
		}
		row := statRow(kind, n.ns, n.name, g, q.window)
		if kind == KindWorkload {
			row.WorkloadKind = n.kind
		}
		out = append(out, row)
	}
	sortStat(out)
	if out == nil {
		out = []StatRow{}
	}
	return out
}

func (s *Store) serveStat(w http.ResponseWriter, r *http.Request) {
	q, ok := parseQuery(w, r)
	if !ok {
		return
	}
	by := r.URL.Query().Get("by")
	switch by {
	case "":
		by = KindWorkload
	case KindWorkload, KindService, KindRoute:
	default:
		badRequest(w, "by=%q: want workload, service or route", by)
		return
	}
	resp := StatResponse{Window: q.window.String(), Rows: s.stat(q, by)}
	if !q.local {
		resp.Rows, resp.Coverage = s.meshRows(r, PathStat, q, resp.Rows)
		sortStat(resp.Rows)
	}
	writeAnswer(w, resp, resp.Coverage)
}

func sortStat(rows []StatRow) {
	slices.SortFunc(rows, func(a, b StatRow) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.WorkloadKind, b.WorkloadKind))
	})
}

func (s *Store) serveTop(w http.ResponseWriter, r *http.Request) {
	q, ok := parseQuery(w, r)
	if !ok {
		return
	}
	resp := TopResponse{Window: q.window.String(), Rows: s.stat(q, KindRoute)}
	if !q.local {
		resp.Rows, resp.Coverage = s.meshRows(r, PathTop, q, resp.Rows)
		sortStat(resp.Rows)
	}
	slices.SortStableFunc(resp.Rows, func(a, b StatRow) int { return cmp.Compare(b.Requests, a.Requests) })
	writeAnswer(w, resp, resp.Coverage)
}

// edges are who called whom: the client's view when the client is in the
// mesh (its proxy reports outbound), the server's for a caller outside it.
func (s *Store) edges(q query) []Edge {
	rows, _, _ := s.snapshot(q.window)
	type key struct {
		src EdgeSource
		dst EdgeDestination
		tls bool
	}
	groups := map[key]*group{}
	for k, c := range rows {
		if k.dir == controlplanev1.Direction_DIRECTION_INBOUND && k.srcID != "" {
			continue // counted by the caller's proxy
		}
		svc := ""
		if _, n, ok := strings.Cut(k.service, "/"); ok {
			svc = n
		}
		ek := key{
			src: EdgeSource{Namespace: k.srcNamespace, Workload: k.srcWorkload, Identity: k.srcID},
			dst: EdgeDestination{Namespace: k.dstNamespace, Workload: k.dstWorkload, Identity: k.dstID, Service: svc},
			tls: k.mtls,
		}
		if q.namespace != "" && ek.src.Namespace != q.namespace && ek.dst.Namespace != q.namespace {
			continue
		}
		g := groups[ek]
		if g == nil {
			g = &group{}
			groups[ek] = g
		}
		g.add(c, "")
	}
	out := []Edge{}
	for k, g := range groups {
		e := Edge{Source: k.src, Destination: k.dst, MTLS: k.tls}
		fill(&g.c, q.window).setEdge(&e)
		out = append(out, e)
	}
	sortEdges(out)
	return out
}

func sortEdges(out []Edge) {
	slices.SortFunc(out, func(a, b Edge) int {
		return cmp.Or(
			cmp.Compare(a.Source.Namespace, b.Source.Namespace), cmp.Compare(a.Source.Workload, b.Source.Workload),
			cmp.Compare(a.Source.Identity, b.Source.Identity),
			cmp.Compare(a.Destination.Namespace, b.Destination.Namespace), cmp.Compare(a.Destination.Workload, b.Destination.Workload),
			cmp.Compare(a.Destination.Service, b.Destination.Service), cmp.Compare(a.Destination.Identity, b.Destination.Identity),
			compareBool(a.MTLS, b.MTLS))
	})
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

func (s *Store) serveEdges(w http.ResponseWriter, r *http.Request) {
	q, ok := parseQuery(w, r)
	if !ok {
		return
	}
	resp := EdgesResponse{Window: q.window.String(), Edges: s.edges(q)}
	if !q.local {
		resp.Edges, resp.Coverage = s.meshEdges(r, q, resp.Edges)
		sortEdges(resp.Edges)
	}
	writeAnswer(w, resp, resp.Coverage)
}

// Proxies are the proxies known, of namespace (all when empty), sorted.
func (s *Store) Proxies(namespace string) []ProxyStatus {
	_, proxies, _ := s.snapshot(MinWindow)
	out := []ProxyStatus{}
	for _, p := range proxies {
		if namespace != "" && p.status.Namespace != namespace {
			continue
		}
		st := p.status
		st.Connected = p.streams > 0
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b ProxyStatus) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Pod, b.Pod))
	})
	return out
}

func (s *Store) serveProxies(w http.ResponseWriter, r *http.Request) {
	ns, ok := parseNamespace(w, r)
	if !ok {
		return
	}
	local, ok := parseScope(w, r)
	if !ok {
		return
	}
	proxies := s.Proxies(ns)
	if local {
		writeJSON(w, http.StatusOK, proxies)
		return
	}
	proxies, cov := s.meshProxies(r, proxies)
	writeAnswer(w, proxies, cov)
}

// writeAnswer writes a scope=mesh answer, with HeaderPartial when it
// misses a replica.
func writeAnswer(w http.ResponseWriter, v any, cov Coverage) {
	if cov.Partial {
		// A header value is one line.
		w.Header().Set(HeaderPartial, strings.Join(strings.Fields(cov.Message), " "))
	}
	writeJSON(w, http.StatusOK, v)
}
