package report

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/latency"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// Buckets is the number of latency buckets of a row: the report's
// log-linear histogram (package latency), fine enough that the control
// plane's percentiles are within 5% of the truth. A row's counters take
// Buckets × 8 bytes, about 1.3 KB with the rest of the row; the Recorder's
// default cap of 10000 rows bounds them to 13 MB, and a proxy's usual tens
// of rows to tens of kilobytes. Prometheus' histogram (proxy/dataplane)
// keeps its own coarse buckets.
const Buckets = latency.Buckets

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
	key       Key
	reqBytes  atomic.Uint64
	respBytes atomic.Uint64
	tcp       atomic.Uint64
	// latency counts the requests by duration bucket: each counter holds
	// the bucket's requests in its low 32 bits and their successes in its
	// high 32 bits, so that a request and its success are one atomic add
	// (one cache line less to bounce between cores than a separate
	// success counter) and a report never has one without the other. A
	// bucket would need 2^32 requests in one report interval to overflow
	// into the successes: 400 million a second at 10 s.
	latency [Buckets]atomic.Uint64

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
	n := uint64(1)
	if ok {
		n |= successOne
	}
	r.latency[latency.BucketOf(d)].Add(n)
	if reqBytes > 0 {
		r.reqBytes.Add(uint64(reqBytes))
	}
	if respBytes > 0 {
		r.respBytes.Add(uint64(respBytes))
	}
}

// successOne is one success in a latency counter; the low 32 bits count
// requests.
const successOne = 1 << 32

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
	var requests, successes uint64
	nonZero := 0
	for i := range r.latency {
		// A load is cheaper than a swap, and most buckets are empty; a
		// request that lands after the load goes to the next report.
		if r.latency[i].Load() == 0 {
			continue
		}
		v := r.latency[i].Swap(0)
		counts[i] = v & (successOne - 1)
		requests += counts[i]
		successes += v >> 32
		if counts[i] > 0 {
			nonZero++
		}
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
	if nonZero > 0 {
		// Sparse: the buckets that hold requests only.
		tr.LatencyBuckets = make([]uint32, 0, nonZero)
		tr.LatencyBucketCounts = make([]uint64, 0, nonZero)
		for i, c := range counts {
			if c > 0 {
				tr.LatencyBuckets = append(tr.LatencyBuckets, uint32(i))
				tr.LatencyBucketCounts = append(tr.LatencyBucketCounts, c)
			}
		}
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
