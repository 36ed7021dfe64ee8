package report

import (
	"sync"
	"sync/atomic"
	"time"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// LatencyBoundsMs are the upper bounds of the latency histogram's buckets,
// in milliseconds: those of trellis_proxy_http_request_duration_seconds, so
// that the control plane's percentiles and Prometheus' agree. The proto
// fixes them too (ReportRequest.latency_bounds_ms); the control plane
// refuses others.
var LatencyBoundsMs = [...]float64{0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000}

// Buckets is the number of latency buckets: one per bound and one more.
const Buckets = len(LatencyBoundsMs) + 1

// boundsNs are LatencyBoundsMs in nanoseconds, to compare durations with.
var boundsNs = func() (b [len(LatencyBoundsMs)]time.Duration) {
	for i, ms := range LatencyBoundsMs {
		b[i] = time.Duration(ms * float64(time.Millisecond))
	}
	return b
}()

// bucketOf is the index of the bucket that holds d.
func bucketOf(d time.Duration) int {
	// Most requests fall in the low buckets: a linear scan beats a binary
	// search over 14 bounds.
	for i, b := range boundsNs {
		if d <= b {
			return i
		}
	}
	return len(boundsNs)
}

// Key says what a row counts. Its fields are TrafficRow's.
type Key struct {
	Direction controlplanev1.Direction
	// PeerIdentity is the other side's SPIFFE ID; empty outside the mesh.
	PeerIdentity string
	// PeerPod is the endpoint's pod (outbound).
	PeerPod string
	// Service is <namespace>/<name> of the Service sent to (outbound).
	Service string
	// Route is <namespace>/<name> of the route that matched (outbound).
	Route string
	MTLS  bool
}

// Row counts the traffic of one Key since the last report. Its methods are
// safe for concurrent use, and do nothing on a nil Row (a proxy without a
// Recorder).
type Row struct {
	key Key
	// The requests are the sum of latency's buckets.
	successes atomic.Uint64
	reqBytes  atomic.Uint64
	respBytes atomic.Uint64
	tcp       atomic.Uint64
	latency   [Buckets]atomic.Uint64

	// retired is set once the Recorder forgot the row; whoever cached it
	// must ask the Recorder again (Live).
	retired atomic.Bool
	// idle is how many collections in a row found the row empty; the
	// Recorder's, under its lock.
	idle int
}

// Observe adds a request that ended after d, with ok whether it
// succeeded, and its bodies' sizes.
func (r *Row) Observe(ok bool, d time.Duration, reqBytes, respBytes int64) {
	if r == nil {
		return
	}
	// The success first, the bucket (the request) after, and take swaps
	// them in the other order: a report then never misses the success of
	// a request it counts, and one whose request it has not counted yet
	// goes back to the next report (see take).
	if ok {
		r.successes.Add(1)
	}
	r.latency[bucketOf(d)].Add(1)
	if reqBytes > 0 {
		r.reqBytes.Add(uint64(reqBytes))
	}
	if respBytes > 0 {
		r.respBytes.Add(uint64(respBytes))
	}
}

// Connection adds an opaque TCP connection.
func (r *Row) Connection() {
	if r != nil {
		r.tcp.Add(1)
	}
}

// Live says whether r may still be added to: it is not nil and the
// Recorder has not retired it. A cache of rows checks it at each use.
func (r *Row) Live() bool { return r != nil && !r.retired.Load() }

// take swaps r's counts for zero and returns them as a TrafficRow, nil
// when they were all zero.
func (r *Row) take() *controlplanev1.TrafficRow {
	var counts [Buckets]uint64
	var requests uint64
	for i := range r.latency {
		counts[i] = r.latency[i].Swap(0)
		requests += counts[i]
	}
	successes := r.successes.Swap(0)
	if successes > requests {
		// A request that ended during the swaps has its success here and
		// its bucket in the next report: give the success back, so that
		// no report has more successes than requests, and the next one,
		// which counts the request, has it.
		r.successes.Add(successes - requests)
		successes = requests
	}
	tr := &controlplanev1.TrafficRow{
		Direction:      r.key.Direction,
		PeerIdentity:   r.key.PeerIdentity,
		PeerPod:        r.key.PeerPod,
		Service:        r.key.Service,
		Route:          r.key.Route,
		Mtls:           r.key.MTLS,
		Requests:       requests,
		Successes:      successes,
		RequestBytes:   r.reqBytes.Swap(0),
		ResponseBytes:  r.respBytes.Swap(0),
		TcpConnections: r.tcp.Swap(0),
	}
	if requests > 0 {
		tr.LatencyCounts = counts[:]
	}
	if requests == 0 && tr.TcpConnections == 0 && tr.RequestBytes == 0 && tr.ResponseBytes == 0 {
		return nil
	}
	return tr
}

// RecorderOptions configure a Recorder.
type RecorderOptions struct {
	// MaxRows bounds the rows held; a new key beyond it is not counted
	// (Dropped says how many times). 10000 when zero.
	MaxRows int
	// IdleReports is how many reports in a row a row may be empty before
	// it is retired; 6 when zero (a minute at the default interval).
	IdleReports int
}

// Recorder holds the rows. Row takes a lock; the data plane caches what it
// returns (checking Live), so that a request does not.
type Recorder struct {
	maxRows, idleReports int
	dropped              atomic.Uint64

	mu   sync.Mutex
	rows map[Key]*Row
	// retiring were retired at the last collection: a request that had
	// the row before it was retired may still add to it, so they are
	// collected once more.
	retiring []*Row
}

// NewRecorder returns an empty Recorder.
func NewRecorder(o RecorderOptions) *Recorder {
	rec := &Recorder{maxRows: o.MaxRows, idleReports: o.IdleReports, rows: map[Key]*Row{}}
	if rec.maxRows <= 0 {
		rec.maxRows = 10000
	}
	if rec.idleReports <= 0 {
		rec.idleReports = 6
	}
	return rec
}

// Row returns the row of k, made if needed; nil (a no-op row) when rec is
// nil or holds MaxRows already.
func (rec *Recorder) Row(k Key) *Row {
	if rec == nil {
		return nil
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if r := rec.rows[k]; r != nil {
		return r
	}
	if len(rec.rows) >= rec.maxRows {
		rec.dropped.Add(1)
		return nil
	}
	r := &Row{key: k}
	rec.rows[k] = r
	return r
}

// Dropped is how many times Row refused a new key for lack of room.
func (rec *Recorder) Dropped() uint64 { return rec.dropped.Load() }

// Len is the number of rows held.
func (rec *Recorder) Len() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.rows)
}

// Collect takes every row's counts since the last Collect: the rows with
// any, in no order. Rows empty for IdleReports collections are retired.
func (rec *Recorder) Collect() []*controlplanev1.TrafficRow {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []*controlplanev1.TrafficRow
	for _, r := range rec.retiring {
		if tr := r.take(); tr != nil {
			out = append(out, tr)
		}
	}
	rec.retiring = rec.retiring[:0]
	for k, r := range rec.rows {
		tr := r.take()
		if tr != nil {
			r.idle = 0
			out = append(out, tr)
			continue
		}
		if r.idle++; r.idle >= rec.idleReports {
			r.retired.Store(true)
			delete(rec.rows, k)
			rec.retiring = append(rec.retiring, r)
		}
	}
	return out
}
