package traffic

import (
	"cmp"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/ca"
	"github.com/trellis-mesh/trellis/latency"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// Options configure a Store.
type Options struct {
	// MaxRowsPerBucket bounds the rows of one BucketWidth bucket; rows
	// beyond it are dropped and counted. The store holds at most
	// MaxWindow/BucketWidth buckets, so about 30 × this many rows of a few
	// hundred bytes each. 4096 when zero.
	MaxRowsPerBucket int
	// ReportInterval is the proxies' report interval (their
	// --report-interval): a bucket is shown once every report that may
	// cover it has come, ReportInterval after its end. 10s when zero.
	ReportInterval time.Duration
	// Pods finds a pod's ServiceAccount and owner (SetPods sets it
	// later); without it, workloads are pods and any ServiceAccount of the
	// namespace may report for any of its pods.
	Pods PodLookup
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Self is this replica's pod name, as answers name it; "local" when
	// empty.
	Self string
	// Peers finds the other replicas (SetPeers sets it later); without
	// it, every answer is this replica's alone.
	Peers PeerLookup
	// PeerTimeout bounds each question to another replica;
	// DefaultPeerTimeout when zero.
	PeerTimeout time.Duration
}

// Store keeps the proxies' reports for MaxWindow in BucketWidth buckets,
// aggregated by source and destination workload, Service and route, and
// the status of each proxy that reported. It is safe for concurrent use;
// one lock guards it, taken once per report message and per API request,
// which is little next to the proxies' traffic it sums up.
type Store struct {
	maxRows int
	settle  time.Duration
	pods    atomic.Pointer[PodLookup]
	now     func() time.Time

	self        string
	peers       atomic.Pointer[PeerLookup]
	peerTimeout time.Duration
	peerClient  *http.Client

	metrics  *metrics
	nBuckets int

	mu      sync.Mutex
	buckets []bucket // a ring, by bucket number modulo len
	proxies map[podKey]*proxyRecord
	// owners remembers the owners of destination pods found, so that a
	// report's rows do not each read the informer cache (a deep copy of
	// the pod); forgotten every MaxWindow, and when it holds maxOwners.
	owners      map[podKey]PodInfo
	ownersSince time.Time
	// expired is when gone proxies were last forgotten.
	expired time.Time
	// scratch holds a report row's histogram while it is added.
	scratch latency.Histogram
}

// maxOwners bounds Store.owners.
const maxOwners = 50000

// NewStore returns an empty Store.
func NewStore(o Options) *Store {
	s := &Store{
		maxRows:  o.MaxRowsPerBucket,
		settle:   o.ReportInterval,
		now:      o.Now,
		nBuckets: int(MaxWindow / BucketWidth),
		proxies:  map[podKey]*proxyRecord{},
	}
	if o.Pods != nil {
		s.SetPods(o.Pods)
	}
	if o.Peers != nil {
		s.SetPeers(o.Peers)
	}
	s.self, s.peerTimeout = cmp.Or(o.Self, "local"), cmp.Or(o.PeerTimeout, DefaultPeerTimeout)
	// Plain HTTP to the pods' IPs, within the cluster; no proxy from the
	// environment.
	s.peerClient = &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     time.Minute,
		DialContext:         (&net.Dialer{Timeout: s.peerTimeout}).DialContext,
	}}
	if s.maxRows <= 0 {
		s.maxRows = 4096
	}
	if s.settle <= 0 {
		s.settle = 10 * time.Second
	}
	if s.now == nil {
		s.now = time.Now
	}
	// A bucket is kept until the longest window's settled buckets no
	// longer reach it.
	s.nBuckets += int((s.settle+BucketWidth-1)/BucketWidth) + 1
	s.buckets = make([]bucket, s.nBuckets)
	s.metrics = newMetrics(s)
	return s
}

type podKey struct{ namespace, name string }

// proxyRecord is what the Store knows of a proxy.
type proxyRecord struct {
	status ProxyStatus
	// streams are its Report streams open now.
	streams int
	// resolved is whether its owner was found; until then it is looked up
	// again at each report (a pod that reached the informers late).
	resolved bool
}

// aggKey is a row of the store: who called whom, through what. Source and
// destination fields are filled as far as the reporting side knows them.
type aggKey struct {
	dir                              controlplanev1.Direction
	srcNamespace, srcWorkload, srcID string
	dstNamespace, dstWorkload, dstID string
	dstPod                           string
	service, route                   string // <namespace>/<name>
	mtls                             bool
	srcWorkloadKind, dstWorkloadKind string
}

// counts are a row's sums in one bucket. They are floats: a report that
// spans two buckets is shared between them by time. The latency histogram
// is sparse (most rows' requests fall in a few of its 156 buckets), so a
// row costs tens of bytes for its latencies rather than a kilobyte and a
// quarter.
type counts struct {
	requests, successes float64
	latency             latency.Histogram
	reqBytes, respBytes float64
	tcp                 float64
}

func (c *counts) add(o *counts, f float64) {
	c.requests += o.requests * f
	c.successes += o.successes * f
	c.latency = c.latency.Add(o.latency, f)
	c.reqBytes += o.reqBytes * f
	c.respBytes += o.respBytes * f
	c.tcp += o.tcp * f
}

// bucket holds the rows of one BucketWidth of time, number n (the Unix
// time divided by BucketWidth).
type bucket struct {
	n    int64
	rows map[aggKey]*counts
}

// bucketNumber is the number of the bucket that holds t.
func bucketNumber(t time.Time) int64 { return t.UnixNano() / int64(BucketWidth) }

// bucket returns the ring's bucket for number n, emptied if it held an
// older one; nil when n is too old to be kept.
func (s *Store) bucket(n, newest int64) *bucket {
	if n <= newest-int64(s.nBuckets) {
		return nil
	}
	b := &s.buckets[int(n%int64(s.nBuckets))]
	if b.n != n {
		b.n, b.rows = n, map[aggKey]*counts{}
	}
	return b
}

// reporter is a validated report's sender, as the Store records it.
type reporter struct {
	namespace, pod, identity string
}

// ingest adds a validated report message of r. Its rows are shared between
// the buckets that the report's interval overlaps, by time.
func (s *Store) ingest(r reporter, req *controlplanev1.ReportRequest) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.expired) > BucketWidth {
		// Without API requests too, the proxies of deleted pods go.
		s.expire(now)
	}
	p := s.touchProxy(r, req, now)

	interval := min(req.GetInterval().AsDuration(), MaxWindow)
	from := now.Add(-interval)
	newest := bucketNumber(now)
	type share struct {
		b *bucket
		f float64
	}
	var shares []share
	if interval <= 0 {
		shares = append(shares, share{s.bucket(newest, newest), 1})
	} else {
		for n := bucketNumber(from); n <= newest; n++ {
			start := time.Unix(0, n*int64(BucketWidth))
			lo, hi := maxTime(start, from), minTime(start.Add(BucketWidth), now)
			if !hi.After(lo) {
				continue
			}
			if b := s.bucket(n, newest); b != nil {
				shares = append(shares, share{b, float64(hi.Sub(lo)) / float64(interval)})
			}
		}
	}
	for _, row := range req.GetRows() {
		k := s.keyOf(p, row)
		c := countsOf(row, &s.scratch)
		for _, sh := range shares {
			dst := sh.b.rows[k]
			if dst == nil {
				if len(sh.b.rows) >= s.maxRows {
					s.metrics.droppedRows.Inc()
					continue
				}
				dst = &counts{}
				sh.b.rows[k] = dst
			}
			dst.add(c, sh.f)
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// countsOf is row's counts; its histogram is made in *scratch, which
// counts.add copies from, so that a report's rows allocate nothing.
func countsOf(row *controlplanev1.TrafficRow, scratch *latency.Histogram) *counts {
	c := &counts{
		requests:  float64(row.Requests),
		successes: float64(row.Successes),
		reqBytes:  float64(row.RequestBytes),
		respBytes: float64(row.ResponseBytes),
		tcp:       float64(row.TcpConnections),
	}
	h := (*scratch)[:0]
	for i, b := range row.LatencyBuckets {
		h = append(h, latency.Bucket{Index: uint16(b), Count: float64(row.LatencyBucketCounts[i])})
	}
	*scratch, c.latency = h, h
	return c
}

// keyOf resolves a row of proxy p to the store's key: the reporting side
// is p's pod; the other is the row's peer, whose pod (outbound) is looked
// up for its workload.
func (s *Store) keyOf(p *proxyRecord, row *controlplanev1.TrafficRow) aggKey {
	k := aggKey{dir: row.Direction, service: row.Service, route: row.Route, mtls: row.Mtls}
	self := p.status
	if row.Direction == controlplanev1.Direction_DIRECTION_INBOUND {
		k.dstNamespace, k.dstWorkload, k.dstWorkloadKind, k.dstID, k.dstPod = self.Namespace, self.Workload, self.WorkloadKind, self.Identity, self.Pod
		k.srcID = row.PeerIdentity
		k.srcNamespace = identityNamespace(row.PeerIdentity)
		return k
	}
	k.srcNamespace, k.srcWorkload, k.srcWorkloadKind, k.srcID = self.Namespace, self.Workload, self.WorkloadKind, self.Identity
	k.dstID, k.dstPod = row.PeerIdentity, row.PeerPod
	if ns, _, ok := strings.Cut(row.Service, "/"); ok {
		k.dstNamespace = ns
	} else {
		k.dstNamespace = identityNamespace(row.PeerIdentity)
	}
	if row.PeerPod != "" && k.dstNamespace != "" {
		if info, ok := s.owner(k.dstNamespace, row.PeerPod); ok {
			k.dstWorkload, k.dstWorkloadKind = info.Workload, info.WorkloadKind
		} else {
			k.dstWorkload, k.dstWorkloadKind = row.PeerPod, KindPod
		}
	}
	return k
}

// owner is lookup's answer for a destination pod, remembered. Called with
// mu held.
func (s *Store) owner(namespace, pod string) (PodInfo, bool) {
	k := podKey{namespace, pod}
	if info, ok := s.owners[k]; ok {
		return info, true
	}
	info, ok := s.lookup(namespace, pod)
	if !ok {
		return info, false
	}
	if now := s.now(); s.owners == nil || len(s.owners) >= maxOwners || now.Sub(s.ownersSince) > MaxWindow {
		s.owners, s.ownersSince = map[podKey]PodInfo{}, now
	}
	s.owners[k] = info
	return info, true
}

// SetPods sets the pod lookup, once the informers that it reads from
// have synced.
func (s *Store) SetPods(pods PodLookup) { s.pods.Store(&pods) }

func (s *Store) lookup(namespace, pod string) (PodInfo, bool) {
	pods := s.pods.Load()
	if pods == nil {
		return PodInfo{}, false
	}
	return (*pods)(namespace, pod)
}

// identityNamespace is the namespace of a SPIFFE ID, "" for none.
func identityNamespace(id string) string {
	if id == "" {
		return ""
	}
	_, ns, _, err := ca.ParseSPIFFEID(id)
	if err != nil {
		return ""
	}
	return ns
}

// touchProxy records a report of r, and returns its record.
func (s *Store) touchProxy(r reporter, req *controlplanev1.ReportRequest, now time.Time) *proxyRecord {
	k := podKey{r.namespace, r.pod}
	p := s.proxies[k]
	if p == nil {
		p = &proxyRecord{status: ProxyStatus{Namespace: r.namespace, Pod: r.pod, Workload: r.pod, WorkloadKind: KindPod}}
		s.proxies[k] = p
	}
	if !p.resolved {
		if info, ok := s.lookup(r.namespace, r.pod); ok {
			p.status.Workload, p.status.WorkloadKind, p.resolved = info.Workload, info.WorkloadKind, true
		}
	}
	info := req.GetProxy()
	st := &p.status
	st.Identity, st.Version = r.identity, info.GetVersion()
	st.CertNotAfter = time.Time{}
	if info.GetCertNotAfter() != nil {
		st.CertNotAfter = info.GetCertNotAfter().AsTime()
	}
	st.LastConfigAt = nil
	if info.GetLastConfigAt() != nil {
		t := info.GetLastConfigAt().AsTime()
		st.LastConfigAt = &t
	}
	st.Streams = int(info.GetDiscoveryStreams())
	st.LastReportAt = now
	st.DroppedReports = req.GetDroppedReports()
	return p
}

// connected counts a Report stream of a pod opening (+1) or ending (-1).
// A proxy is forgotten MaxWindow after its last report once it has no
// stream.
func (s *Store) connected(namespace, pod string, delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := podKey{namespace, pod}
	p := s.proxies[k]
	if p == nil {
		if delta < 0 {
			return
		}
		p = &proxyRecord{status: ProxyStatus{Namespace: namespace, Pod: pod, Workload: pod, WorkloadKind: KindPod}}
		s.proxies[k] = p
	}
	p.streams += delta
}

// expire forgets proxies that neither reported within MaxWindow nor are
// connected. Called with mu held.
func (s *Store) expire(now time.Time) {
	s.expired = now
	for k, p := range s.proxies {
		if p.streams <= 0 && now.Sub(p.status.LastReportAt) > MaxWindow {
			delete(s.proxies, k)
		}
	}
}

// settledRange is the numbers of the buckets of a window that ends now:
// the newest n buckets that every report covering them has reached.
func (s *Store) settledRange(window time.Duration, now time.Time) (first, last int64) {
	last = bucketNumber(now.Add(-s.settle)) - 1
	n := int64(window / BucketWidth)
	return last - n + 1, last
}

// sum adds the rows of the buckets first..last, by key.
func (s *Store) sum(first, last int64) map[aggKey]*counts {
	out := map[aggKey]*counts{}
	for i := range s.buckets {
		b := &s.buckets[i]
		if b.rows == nil || b.n < first || b.n > last {
			continue
		}
		for k, c := range b.rows {
			dst := out[k]
			if dst == nil {
				dst = &counts{}
				out[k] = dst
			}
			dst.add(c, 1)
		}
	}
	return out
}

// rowCount is the number of rows held, for the metrics.
func (s *Store) rowCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for i := range s.buckets {
		n += len(s.buckets[i].rows)
	}
	return n
}

// proxyCount is the number of proxies connected now.
func (s *Store) proxyCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range s.proxies {
		if p.streams > 0 {
			n++
		}
	}
	return n
}
