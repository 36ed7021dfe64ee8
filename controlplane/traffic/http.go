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
}

func parseQuery(w http.ResponseWriter, r *http.Request) (query, bool) {
	win, err := window(r)
	if err != nil {
		badRequest(w, "%v", err)
		return query{}, false
	}
	ns := r.URL.Query().Get("namespace")
	if len(ns) > 63 {
		badRequest(w, "namespace=%q is longer than a namespace name can be (63)", ns)
		return query{}, false
	}
	return query{namespace: ns, window: win}, true
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

// fill sets the numbers of a row from c over win.
func fill(c *counts, win time.Duration) (requests uint64, rps float64, success *float64, lat *Latency) {
	requests = uint64(math.Round(c.requests))
	rps = c.requests / win.Seconds()
	if c.requests >= 0.5 {
		sr := min(c.successes/c.requests, 1)
		success = &sr
		if p50 := c.latency.Quantile(0.5); !math.IsNaN(p50) {
			lat = &Latency{P50: p50, P95: c.latency.Quantile(0.95), P99: c.latency.Quantile(0.99)}
		}
	}
	return requests, rps, success, lat
}

func statRow(kind, ns, name string, g *group, win time.Duration) StatRow {
	row := StatRow{Kind: kind, Namespace: ns, Name: name, MeshedPods: len(g.pods)}
	row.Requests, row.RPS, row.SuccessRate, row.LatencyMs = fill(&g.c, win)
	row.BytesIn, row.BytesOut = uint64(math.Round(g.c.reqBytes)), uint64(math.Round(g.c.respBytes))
	row.TCPConnections = uint64(math.Round(g.c.tcp))
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
	slices.SortFunc(out, func(a, b StatRow) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.WorkloadKind, b.WorkloadKind))
	})
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
	writeJSON(w, http.StatusOK, StatResponse{Window: q.window.String(), Rows: s.stat(q, by)})
}

func (s *Store) serveTop(w http.ResponseWriter, r *http.Request) {
	q, ok := parseQuery(w, r)
	if !ok {
		return
	}
	rows := s.stat(q, KindRoute)
	slices.SortStableFunc(rows, func(a, b StatRow) int { return cmp.Compare(b.Requests, a.Requests) })
	writeJSON(w, http.StatusOK, TopResponse{Window: q.window.String(), Rows: rows})
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
		e.Requests, e.RPS, e.SuccessRate, e.LatencyMs = fill(&g.c, q.window)
		e.BytesIn, e.BytesOut = uint64(math.Round(g.c.reqBytes)), uint64(math.Round(g.c.respBytes))
		e.TCPConnections = uint64(math.Round(g.c.tcp))
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Edge) int {
		return cmp.Or(
			cmp.Compare(a.Source.Namespace, b.Source.Namespace), cmp.Compare(a.Source.Workload, b.Source.Workload),
			cmp.Compare(a.Source.Identity, b.Source.Identity),
			cmp.Compare(a.Destination.Namespace, b.Destination.Namespace), cmp.Compare(a.Destination.Workload, b.Destination.Workload),
			cmp.Compare(a.Destination.Service, b.Destination.Service), cmp.Compare(a.Destination.Identity, b.Destination.Identity),
			compareBool(a.MTLS, b.MTLS))
	})
	return out
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
	writeJSON(w, http.StatusOK, EdgesResponse{Window: q.window.String(), Edges: s.edges(q)})
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
	ns := r.URL.Query().Get("namespace")
	if len(ns) > 63 {
		badRequest(w, "namespace=%q is longer than a namespace name can be (63)", ns)
		return
	}
	writeJSON(w, http.StatusOK, s.Proxies(ns))
}
