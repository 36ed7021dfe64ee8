package traffic

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/latency"
)

// Each proxy reports to the one control plane replica it is connected to,
// so each replica's Store knows only its own proxies. A scope=mesh answer
// is this replica's local one plus every other ready replica's scope=local
// answer, added up here exactly: counts and bytes add, histograms add
// bucket by bucket and the percentiles are read from the sum, a workload's
// meshed pods add (each pod's proxy reports to one replica), and a proxy
// is listed once.

// DefaultPeerTimeout bounds each question to another replica: the page
// polls every 2 s, and a replica that cannot answer in this time is left
// out and named rather than holding up the answer.
const DefaultPeerTimeout = 2 * time.Second

// Peer is another replica of the Mesh's control plane.
type Peer struct {
	// Name is its pod's name.
	Name string
	// URL is its HTTP port's base URL: http://<pod IP>:15014.
	URL string
}

// PeerLookup lists the other ready replicas of the control plane; an
// error makes answers partial, naming it.
type PeerLookup func() ([]Peer, error)

// SetPeers sets how the other replicas are found, once the informers that
// it reads from have synced. Until then answers are this replica's.
func (s *Store) SetPeers(peers PeerLookup) { s.peers.Store(&peers) }

// peerAnswer is one replica's answer, decoded.
type peerAnswer[T any] struct {
	peer Peer
	v    T
	err  error
}

// askPeers asks every other replica for its scope=local answer to path
// with r's query, in parallel, each within the peer timeout. The coverage
// lists this replica first, then the peers by name.
func askPeers[T any](s *Store, r *http.Request, path string) ([]peerAnswer[T], Coverage) {
	cov := Coverage{Replicas: []ReplicaAnswer{{Name: s.self, Answered: true}}}
	lookup := s.peers.Load()
	if lookup == nil {
		return nil, cov
	}
	peers, err := (*lookup)()
	if err != nil {
		cov.Partial = true
		cov.Message = fmt.Sprintf("Partial answer: replica %s could not list the other control plane replicas (%v); the traffic of their proxies is missing.", s.self, err)
		return nil, cov
	}
	q := r.URL.Query()
	q.Set("scope", ScopeLocal)
	answers := make([]peerAnswer[T], len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		answers[i].peer = p
		wg.Go(func() {
			answers[i].err = s.getPeer(r.Context(), p, path, q, &answers[i].v)
		})
	}
	wg.Wait()
	return answers, cov
}

// cover adds the answers' replicas to cov, and says which did not answer.
func cover[T any](cov *Coverage, answers []peerAnswer[T]) {
	var missing []string
	for _, a := range answers {
		ra := ReplicaAnswer{Name: a.peer.Name, Answered: a.err == nil}
		if a.err != nil {
			ra.Error = a.err.Error()
			missing = append(missing, fmt.Sprintf("%s (%v)", a.peer.Name, a.err))
		}
		cov.Replicas = append(cov.Replicas, ra)
	}
	if len(missing) > 0 {
		cov.Partial = true
		cov.Message = fmt.Sprintf("Partial answer: control plane %s %s did not answer; the traffic of the proxies connected to %s is missing.",
			plural(len(missing), "replica", "replicas"), strings.Join(missing, ", "), plural(len(missing), "it", "them"))
	}
}

// localUnreadable is the coverage of an answer whose own rows did not read
// back (a bug: apiHistogram writes what histogramOf reads): this
// replica's, said to be partial.
func localUnreadable(s *Store, err error) Coverage {
	return Coverage{Replicas: []ReplicaAnswer{{Name: s.self, Answered: true}}, Partial: true,
		Message: fmt.Sprintf("Partial answer: replica %s could not add its own numbers to the other replicas' (%v); it shows its own proxies' only.", s.self, err)}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// getPeer decodes p's answer to path?q into v.
func (s *Store) getPeer(ctx context.Context, p Peer, path string, q url.Values, v any) error {
	ctx, cancel := context.WithTimeout(ctx, s.peerTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(p.URL, "/")+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.peerClient.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("no answer from %s within %s", p.URL, s.peerTimeout)
		}
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading its answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e ErrorResponse
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s answered %s: %s", p.URL, resp.Status, e.Error)
		}
		return fmt.Errorf("%s answered %s", p.URL, resp.Status)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s: not the traffic API's JSON: %w", p.URL, err)
	}
	return nil
}

// apiHistogram is h as the API shows it.
func apiHistogram(h latency.Histogram) *LatencyHistogram {
	out := &LatencyHistogram{BoundsMs: make([]float64, 0, len(h)), Counts: make([]float64, 0, len(h))}
	for _, b := range h {
		if b.Count == 0 {
			continue
		}
		if int(b.Index) >= latency.Bounds {
			out.Overflow += b.Count
			continue
		}
		out.BoundsMs = append(out.BoundsMs, latency.BoundsMs[b.Index])
		out.Counts = append(out.Counts, b.Count)
	}
	return out
}

// histogramOf reads a histogram of the API back; an error when its bounds
// are not this replica's (a replica of another version).
func histogramOf(h *LatencyHistogram) (latency.Histogram, error) {
	if h == nil {
		return nil, nil
	}
	if len(h.BoundsMs) != len(h.Counts) {
		return nil, fmt.Errorf("latencyHistogram has %d bounds and %d counts", len(h.BoundsMs), len(h.Counts))
	}
	out := make(latency.Histogram, 0, len(h.BoundsMs)+1)
	for i, ms := range h.BoundsMs {
		j, ok := latency.IndexOfBound(ms)
		if !ok || len(out) > 0 && uint16(j) <= out[len(out)-1].Index {
			return nil, fmt.Errorf("latencyHistogram bound %v ms is not one of this replica's increasing bounds: the replicas run different versions", ms)
		}
		out = append(out, latency.Bucket{Index: uint16(j), Count: h.Counts[i]})
	}
	if h.Overflow > 0 {
		out = append(out, latency.Bucket{Index: latency.Bounds, Count: h.Overflow})
	}
	return out, nil
}

// countsOfAnswer is the counts behind a row or edge of an answer. The
// requests are the histogram's (unrounded) when it has one, and the
// successes the success rate's share of them.
func countsOfAnswer(requests uint64, success *float64, h *LatencyHistogram, in, out, tcp uint64) (counts, error) {
	hist, err := histogramOf(h)
	if err != nil {
		return counts{}, err
	}
	c := counts{requests: float64(requests), latency: hist, reqBytes: float64(in), respBytes: float64(out), tcp: float64(tcp)}
	if hist != nil {
		c.requests = hist.Total()
	}
	if success != nil {
		c.successes = *success * c.requests
	}
	return c, nil
}

type statKey struct{ kind, namespace, name, workloadKind string }

// statSum is a StatRow being added up.
type statSum struct {
	c    counts
	pods int
}

// meshRows adds the other replicas' rows of path (stat or top) to this
// replica's.
func (s *Store) meshRows(r *http.Request, path string, q query, local []StatRow) ([]StatRow, Coverage) {
	type rowsAnswer struct {
		Rows []StatRow `json:"rows"`
	}
	answers, cov := askPeers[rowsAnswer](s, r, path)
	sums := map[statKey]*statSum{}
	var order []statKey
	add := func(rows []StatRow) error {
		// Check the whole answer before any of it counts.
		cs := make([]counts, len(rows))
		for i, row := range rows {
			c, err := countsOfAnswer(row.Requests, row.SuccessRate, row.LatencyHistogram, row.BytesIn, row.BytesOut, row.TCPConnections)
			if err != nil {
				return fmt.Errorf("%s %s/%s: %w", row.Kind, row.Namespace, row.Name, err)
			}
			cs[i] = c
		}
		for i, row := range rows {
			k := statKey{row.Kind, row.Namespace, row.Name, row.WorkloadKind}
			sum := sums[k]
			if sum == nil {
				sum = &statSum{}
				sums[k] = sum
				order = append(order, k)
			}
			sum.c.add(&cs[i], 1)
			if row.Kind == KindWorkload {
				// Each pod's proxy reports to one replica.
				sum.pods += row.MeshedPods
			} else {
				// Destination pods that several replicas' callers may all
				// have reached: the most any replica saw.
				sum.pods = max(sum.pods, row.MeshedPods)
			}
		}
		return nil
	}
	if err := add(local); err != nil {
		return local, localUnreadable(s, err)
	}
	for i := range answers {
		if answers[i].err == nil {
			answers[i].err = add(answers[i].v.Rows)
		}
	}
	cover(&cov, answers)
	if len(answers) == 0 {
		return local, cov
	}
	out := make([]StatRow, 0, len(order))
	for _, k := range order {
		sum := sums[k]
		row := StatRow{Kind: k.kind, Namespace: k.namespace, Name: k.name, WorkloadKind: k.workloadKind, MeshedPods: sum.pods}
		fill(&sum.c, q.window).setRow(&row)
		out = append(out, row)
	}
	return out, cov
}

type edgeKey struct {
	src EdgeSource
	dst EdgeDestination
	tls bool
}

// meshEdges adds the other replicas' edges to this replica's.
func (s *Store) meshEdges(r *http.Request, q query, local []Edge) ([]Edge, Coverage) {
	answers, cov := askPeers[EdgesResponse](s, r, PathEdges)
	sums := map[edgeKey]*counts{}
	var order []edgeKey
	add := func(edges []Edge) error {
		cs := make([]counts, len(edges))
		for i, e := range edges {
			c, err := countsOfAnswer(e.Requests, e.SuccessRate, e.LatencyHistogram, e.BytesIn, e.BytesOut, e.TCPConnections)
			if err != nil {
				return fmt.Errorf("edge %s/%s → %s/%s: %w", e.Source.Namespace, e.Source.Workload, e.Destination.Namespace, e.Destination.Workload, err)
			}
			cs[i] = c
		}
		for i, e := range edges {
			k := edgeKey{e.Source, e.Destination, e.MTLS}
			sum := sums[k]
			if sum == nil {
				sum = &counts{}
				sums[k] = sum
				order = append(order, k)
			}
			sum.add(&cs[i], 1)
		}
		return nil
	}
	if err := add(local); err != nil {
		return local, localUnreadable(s, err)
	}
	for i := range answers {
		if answers[i].err == nil {
			answers[i].err = add(answers[i].v.Edges)
		}
	}
	cover(&cov, answers)
	if len(answers) == 0 {
		return local, cov
	}
	out := make([]Edge, 0, len(order))
	for _, k := range order {
		e := Edge{Source: k.src, Destination: k.dst, MTLS: k.tls}
		fill(sums[k], q.window).setEdge(&e)
		out = append(out, e)
	}
	return out, cov
}

// meshProxies lists every replica's proxies once: a proxy that moved to
// another replica within the window is known to both, and the one it is
// connected to, else the one it reported to last, says how it is.
func (s *Store) meshProxies(r *http.Request, local []ProxyStatus) ([]ProxyStatus, Coverage) {
	answers, cov := askPeers[[]ProxyStatus](s, r, PathProxies)
	cover(&cov, answers)
	if len(answers) == 0 {
		return local, cov
	}
	latest := map[podKey]ProxyStatus{}
	add := func(ps []ProxyStatus) {
		for _, p := range ps {
			k := podKey{p.Namespace, p.Pod}
			if old, ok := latest[k]; ok && (old.Connected && !p.Connected || old.Connected == p.Connected && !p.LastReportAt.After(old.LastReportAt)) {
				continue
			}
			latest[k] = p
		}
	}
	add(local)
	for _, a := range answers {
		if a.err == nil {
			add(a.v)
		}
	}
	out := make([]ProxyStatus, 0, len(latest))
	for _, p := range latest {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b ProxyStatus) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Pod, b.Pod))
	})
	return out, cov
}
