package report

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/latency"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

var outKey = Key{Direction: controlplanev1.Direction_DIRECTION_OUTBOUND, PeerIdentity: "spiffe://cluster.local/ns/shop/sa/api",
	PeerPod: "api-7d4b9c-x2x9z", Service: "shop/api", Route: "shop/api-route", MTLS: true}

// A collection takes the counts since the last one: deltas, only rows
// with something, and requests are what the histogram holds.
func TestCollectDeltas(t *testing.T) {
	rec := NewRecorder(RecorderOptions{})
	r := rec.Row(outKey)
	if rec.Row(outKey) != r {
		t.Fatal("the same key gave two rows")
	}
	r.Observe(true, 3*time.Millisecond, 100, 2000)
	r.Observe(true, 3*time.Millisecond, 0, 10)
	r.Observe(false, 2*time.Second, 5, 0)
	rec.Row(Key{Direction: controlplanev1.Direction_DIRECTION_INBOUND}).Connection()
	rec.Row(Key{Direction: controlplanev1.Direction_DIRECTION_INBOUND, PeerIdentity: "x"}) // nothing

	rows := rec.Collect()
	if len(rows) != 2 {
		t.Fatalf("got %d rows, want the 2 with counts: %v", len(rows), rows)
	}
	var http, tcp *controlplanev1.TrafficRow
	for _, row := range rows {
		if row.Direction == controlplanev1.Direction_DIRECTION_OUTBOUND {
			http = row
		} else {
			tcp = row
		}
	}
	if http.Requests != 3 || http.Successes != 2 || http.RequestBytes != 105 || http.ResponseBytes != 2010 ||
		http.Route != "shop/api-route" || http.PeerPod != outKey.PeerPod || !http.Mtls {
		t.Errorf("outbound row: %v", http)
	}
	// Sparse: the two buckets that hold requests, increasing.
	ms3, s2 := uint32(latency.BucketOf(3*time.Millisecond)), uint32(latency.BucketOf(2*time.Second))
	if !slices.Equal(http.LatencyBuckets, []uint32{ms3, s2}) || !slices.Equal(http.LatencyBucketCounts, []uint64{2, 1}) {
		t.Errorf("latency buckets %v counts %v: want 2 in bucket %d (3 ms) and 1 in %d (2 s)", http.LatencyBuckets, http.LatencyBucketCounts, ms3, s2)
	}
	if lo, hi := latency.BoundsMs[ms3-1], latency.BoundsMs[ms3]; lo >= 3 || hi < 3 {
		t.Errorf("bucket %d is (%v, %v] ms, which does not hold 3 ms", ms3, lo, hi)
	}
	if tcp.TcpConnections != 1 || tcp.Requests != 0 || tcp.LatencyBuckets != nil || tcp.LatencyBucketCounts != nil {
		t.Errorf("tcp row: %v", tcp)
	}
	if again := rec.Collect(); len(again) != 0 {
		t.Errorf("a second collection without traffic sent %v", again)
	}
}

// A row empty for IdleReports collections is retired: a cache of it sees
// it is not Live, and the key gets a new row. A late increment to the
// retired row is still reported once.
func TestRetire(t *testing.T) {
	rec := NewRecorder(RecorderOptions{IdleReports: 2})
	r := rec.Row(outKey)
	r.Observe(true, time.Millisecond, 0, 0)
	rec.Collect()
	rec.Collect()
	if !r.Live() || rec.Len() != 1 {
		t.Fatal("retired after one idle collection")
	}
	rec.Collect()
	if r.Live() || rec.Len() != 0 {
		t.Fatalf("not retired after two idle collections: live %v, %d rows", r.Live(), rec.Len())
	}
	r.Observe(true, time.Millisecond, 0, 0) // a request that held the old row
	r2 := rec.Row(outKey)
	if r2 == r || !r2.Live() {
		t.Fatal("the key did not get a new row")
	}
	r2.Observe(false, time.Millisecond, 0, 0)
	var req, ok uint64
	for _, row := range rec.Collect() {
		req, ok = req+row.Requests, ok+row.Successes
	}
	if req != 2 || ok != 1 {
		t.Errorf("got %d requests, %d successes; want the late one and the new one: 2, 1", req, ok)
	}
	if rows := rec.Collect(); len(rows) != 0 {
		t.Errorf("the retired row was collected twice: %v", rows)
	}
}

// Rows beyond MaxRows are not made: the request is not counted, and
// Dropped says so; a nil Row takes anything.
func TestMaxRows(t *testing.T) {
	rec := NewRecorder(RecorderOptions{MaxRows: 2})
	rec.Row(Key{PeerPod: "a"}).Observe(true, 0, 0, 0)
	rec.Row(Key{PeerPod: "b"}).Observe(true, 0, 0, 0)
	r := rec.Row(Key{PeerPod: "c"})
	if r != nil || rec.Dropped() != 1 {
		t.Fatalf("third row %v, dropped %d", r, rec.Dropped())
	}
	r.Observe(true, time.Second, 1, 1)
	r.Connection()
	if r.Live() {
		t.Error("a nil row is live")
	}
	if rec.Row(Key{PeerPod: "a"}) == nil {
		t.Error("an existing key was refused")
	}
}

// Collections racing with requests lose nothing, and no report has more
// successes than requests (run with -race).
func TestCollectConcurrent(t *testing.T) {
	// Collections here come microseconds apart, not an interval: the row
	// must not be retired meanwhile.
	rec := NewRecorder(RecorderOptions{IdleReports: 1 << 30})
	r := rec.Row(outKey)
	const workers, each = 4, 20000
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				r.Observe(true, time.Millisecond, 1, 1)
			}
		})
	}
	var req, ok, bytes uint64
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	collect := func() {
		for _, row := range rec.Collect() {
			if row.Successes > row.Requests {
				t.Errorf("a row with %d successes of %d requests", row.Successes, row.Requests)
			}
			req, ok, bytes = req+row.Requests, ok+row.Successes, bytes+row.RequestBytes
		}
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
			collect()
		}
	}
	collect()
	if req != workers*each || ok != workers*each || bytes != workers*each {
		t.Errorf("collected %d requests, %d successes, %d bytes; want %d of each", req, ok, bytes, workers*each)
	}
}

// BenchmarkRecord is the report's cost on a request's path: a cached row's
// Live check and Observe, from every core at once on the same row (the
// worst case: one busy route and endpoint).
func BenchmarkRecord(b *testing.B) {
	rec := NewRecorder(RecorderOptions{})
	r := rec.Row(outKey)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r.Live() {
				r.Observe(true, 3*time.Millisecond, 512, 4096)
			}
		}
	})
}

// BenchmarkRowLookup is the slow path, a Recorder lookup, taken once per
// opaque connection and when a cached row was retired.
func BenchmarkRowLookup(b *testing.B) {
	rec := NewRecorder(RecorderOptions{})
	rec.Row(outKey)
	b.ReportAllocs()
	for b.Loop() {
		rec.Row(outKey)
	}
}
