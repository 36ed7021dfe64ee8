package main

import (
	"cmp"
	"slices"

	"github.com/trellis-mesh/trellis/controlplane/traffic"
)

// Each control plane replica knows only the proxies connected to it, so the
// traffic of a workload is split between the replicas' answers. These
// functions add them up: counts and rates add; a success rate is the share
// of all requests; percentiles cannot be added, so the merged ones are the
// replicas' percentiles weighted by their requests (exact with one replica,
// and close when the replicas see alike traffic, which the proxies' spread
// over replicas makes likely).

// counts is what merges alike in stat rows and edges.
type counts struct {
	requests              uint64
	rps                   float64
	successes             float64 // successRate × requests, summed
	p50, p95, p99         float64 // percentile × requests, summed
	bytesIn, bytesOut     uint64
	tcpConnections        uint64
	latencyWeight         uint64 // requests of the parts that had latencies
	successWeight         uint64 // requests of the parts that had a success rate
	meshedSum, meshedMost int
}

func (c *counts) add(requests uint64, rps float64, sr *float64, lat *traffic.Latency, bytesIn, bytesOut, tcp uint64, meshed int) {
	c.requests += requests
	c.rps += rps
	if sr != nil {
		c.successes += *sr * float64(requests)
		c.successWeight += requests
	}
	if lat != nil {
		w := float64(requests)
		c.p50 += lat.P50 * w
		c.p95 += lat.P95 * w
		c.p99 += lat.P99 * w
		c.latencyWeight += requests
	}
	c.bytesIn += bytesIn
	c.bytesOut += bytesOut
	c.tcpConnections += tcp
	c.meshedSum += meshed
	c.meshedMost = max(c.meshedMost, meshed)
}

func (c *counts) successRate() *float64 {
	if c.successWeight == 0 {
		return nil
	}
	return new(c.successes / float64(c.successWeight))
}

func (c *counts) latency() *traffic.Latency {
	if c.latencyWeight == 0 {
		return nil
	}
	w := float64(c.latencyWeight)
	return &traffic.Latency{P50: c.p50 / w, P95: c.p95 / w, P99: c.p99 / w}
}

type rowKey struct{ kind, namespace, name string }

// mergeRows adds up the rows of several replicas. A workload's meshed pods
// add (each pod's proxy reports to one replica); a Service's or route's are
// destination pods that several replicas' callers may all have reached, so
// the largest count is kept.
func mergeRows(parts [][]traffic.StatRow) []traffic.StatRow {
	if len(parts) == 1 {
		return parts[0]
	}
	acc := map[rowKey]*counts{}
	first := map[rowKey]traffic.StatRow{}
	var order []rowKey
	for _, rows := range parts {
		for _, r := range rows {
			k := rowKey{r.Kind, r.Namespace, r.Name}
			c, ok := acc[k]
			if !ok {
				c = &counts{}
				acc[k], first[k] = c, r
				order = append(order, k)
			}
			c.add(r.Requests, r.RPS, r.SuccessRate, r.LatencyMs, r.BytesIn, r.BytesOut, r.TCPConnections, r.MeshedPods)
		}
	}
	out := make([]traffic.StatRow, 0, len(order))
	for _, k := range order {
		c, r := acc[k], first[k]
		r.Requests, r.RPS, r.SuccessRate, r.LatencyMs = c.requests, c.rps, c.successRate(), c.latency()
		r.BytesIn, r.BytesOut, r.TCPConnections = c.bytesIn, c.bytesOut, c.tcpConnections
		r.MeshedPods = c.meshedMost
		if r.Kind == traffic.KindWorkload {
			r.MeshedPods = c.meshedSum
		}
		out = append(out, r)
	}
	return out
}

func mergeStat(answers []traffic.StatResponse) traffic.StatResponse {
	out := traffic.StatResponse{Rows: []traffic.StatRow{}}
	parts := make([][]traffic.StatRow, 0, len(answers))
	for _, a := range answers {
		out.Window = cmp.Or(out.Window, a.Window)
		parts = append(parts, a.Rows)
	}
	if len(parts) > 0 {
		out.Rows = mergeRows(parts)
	}
	slices.SortStableFunc(out.Rows, func(a, b traffic.StatRow) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Kind, b.Kind))
	})
	return out
}

// mergeTop adds up the replicas' routes, busiest first.
func mergeTop(answers []traffic.TopResponse) traffic.TopResponse {
	out := traffic.TopResponse{Rows: []traffic.StatRow{}}
	parts := make([][]traffic.StatRow, 0, len(answers))
	for _, a := range answers {
		out.Window = cmp.Or(out.Window, a.Window)
		parts = append(parts, a.Rows)
	}
	if len(parts) > 0 {
		out.Rows = mergeRows(parts)
	}
	slices.SortStableFunc(out.Rows, func(a, b traffic.StatRow) int {
		return cmp.Or(cmp.Compare(b.Requests, a.Requests), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

type edgeKey struct {
	src  traffic.EdgeSource
	dst  traffic.EdgeDestination
	mtls bool
}

func mergeEdges(answers []traffic.EdgesResponse) traffic.EdgesResponse {
	out := traffic.EdgesResponse{Edges: []traffic.Edge{}}
	acc := map[edgeKey]*counts{}
	var order []edgeKey
	for _, a := range answers {
		out.Window = cmp.Or(out.Window, a.Window)
		if len(answers) == 1 {
			out.Edges = append(out.Edges, a.Edges...)
			continue
		}
		for _, e := range a.Edges {
			k := edgeKey{e.Source, e.Destination, e.MTLS}
			c, ok := acc[k]
			if !ok {
				c = &counts{}
				acc[k] = c
				order = append(order, k)
			}
			c.add(e.Requests, e.RPS, e.SuccessRate, e.LatencyMs, e.BytesIn, e.BytesOut, e.TCPConnections, 0)
		}
	}
	for _, k := range order {
		c := acc[k]
		out.Edges = append(out.Edges, traffic.Edge{
			Source: k.src, Destination: k.dst, MTLS: k.mtls,
			Requests: c.requests, RPS: c.rps, SuccessRate: c.successRate(), LatencyMs: c.latency(),
			BytesIn: c.bytesIn, BytesOut: c.bytesOut, TCPConnections: c.tcpConnections,
		})
	}
	slices.SortStableFunc(out.Edges, func(a, b traffic.Edge) int {
		return cmp.Or(
			cmp.Compare(a.Source.Namespace, b.Source.Namespace), cmp.Compare(a.Source.Workload, b.Source.Workload),
			cmp.Compare(a.Destination.Namespace, b.Destination.Namespace), cmp.Compare(a.Destination.Workload, b.Destination.Workload),
			cmp.Compare(a.Destination.Service, b.Destination.Service))
	})
	return out
}

// mergeProxies lists every replica's proxies once: a proxy that moved to
// another replica within the window is known to both, and the one it
// reported to last says how it is.
func mergeProxies(answers [][]traffic.ProxyStatus) []traffic.ProxyStatus {
	type key struct{ ns, pod string }
	latest := map[key]traffic.ProxyStatus{}
	for _, a := range answers {
		for _, p := range a {
			k := key{p.Namespace, p.Pod}
			if old, ok := latest[k]; ok && (old.Connected && !p.Connected || !p.LastReportAt.After(old.LastReportAt) && old.Connected == p.Connected) {
				continue
			}
			latest[k] = p
		}
	}
	out := make([]traffic.ProxyStatus, 0, len(latest))
	for _, p := range latest {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b traffic.ProxyStatus) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Pod, b.Pod))
	})
	return out
}
