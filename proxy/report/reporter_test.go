package report

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/trellis-mesh/trellis/latency"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// sink is a TelemetryService that keeps what it receives, or refuses.
type sink struct {
	controlplanev1.UnimplementedTelemetryServiceServer
	mu      sync.Mutex
	got     []*controlplanev1.ReportRequest
	streams atomic.Int32
	refuse  error
}

func (s *sink) Report(stream grpc.ClientStreamingServer[controlplanev1.ReportRequest, controlplanev1.ReportResponse]) error {
	s.streams.Add(1)
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&controlplanev1.ReportResponse{})
		}
		if err != nil {
			return err
		}
		if s.refuse != nil {
			return s.refuse
		}
		s.mu.Lock()
		s.got = append(s.got, req)
		s.mu.Unlock()
	}
}

func (s *sink) messages() []*controlplanev1.ReportRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*controlplanev1.ReportRequest(nil), s.got...)
}

// serve serves s on addr ("127.0.0.1:0" for any port) until the returned
// stop is called.
func serve(t *testing.T, addr string, s *sink) (string, func()) {
	t.Helper()
	var lis net.Listener
	var err error
	for range 50 { // the port of a stopped server may take a moment to free
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	controlplanev1.RegisterTelemetryServiceServer(gs, s)
	go func() { _ = gs.Serve(lis) }()
	var once sync.Once
	stop := func() { once.Do(gs.Stop) }
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

func startReporter(t *testing.T, addr string, rec *Recorder, o Options) *Reporter {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	o.Client, o.Recorder, o.Log = controlplanev1.NewTelemetryServiceClient(cc), rec, quiet
	if o.Interval == 0 {
		o.Interval = 50 * time.Millisecond
	}
	o.Info = func() *controlplanev1.ProxyInfo {
		return &controlplanev1.ProxyInfo{Namespace: "shop", Pod: "web-1", Identity: "spiffe://cluster.local/ns/shop/sa/web"}
	}
	r := NewReporter(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// totalRequests sums the requests of msgs.
func totalRequests(msgs []*controlplanev1.ReportRequest) (n uint64) {
	for _, m := range msgs {
		for _, r := range m.Rows {
			n += r.Requests
		}
	}
	return n
}

// Reports come every interval on one stream, with the proxy's details and
// the histogram's bounds; while the control plane is away they are
// dropped and counted, and the proxy comes back by itself.
func TestReporterSendsDropsAndReconnects(t *testing.T) {
	s := &sink{}
	addr, stop := serve(t, "127.0.0.1:0", s)
	rec := NewRecorder(RecorderOptions{})
	startReporter(t, addr, rec, Options{})

	rec.Row(outKey).Observe(true, time.Millisecond, 10, 20)
	rec.Row(outKey).Observe(false, time.Millisecond, 10, 20)
	waitFor(t, "the first requests' report", func() bool { return totalRequests(s.messages()) == 2 })
	msgs := s.messages()
	m := msgs[len(msgs)-1]
	if m.Proxy.GetPod() != "web-1" || len(m.LatencyBucketBoundsMs) != latency.Bounds || m.Interval.AsDuration() <= 0 || m.DroppedReports != 0 {
		t.Errorf("report: %v", m)
	}
	waitFor(t, "empty reports that say the proxy is there", func() bool { return len(s.messages()) >= len(msgs)+2 })
	if n := s.streams.Load(); n != 1 {
		t.Errorf("%d streams for reports in a row; want 1", n)
	}

	stop()
	rec.Row(outKey).Observe(true, time.Millisecond, 0, 0) // lost with its report
	time.Sleep(300 * time.Millisecond)
	s2 := &sink{}
	serve(t, addr, s2)
	// Requests are dropped with their reports until gRPC has connected
	// again (its own backoff), then reported.
	waitFor(t, "a report after the control plane came back", func() bool {
		rec.Row(outKey).Observe(true, time.Millisecond, 0, 0)
		return totalRequests(s2.messages()) >= 1
	})
	last := s2.messages()[len(s2.messages())-1]
	if last.DroppedReports == 0 {
		t.Error("reports dropped while the control plane was away were not counted")
	}
}

// A report the control plane refuses is not sent again for RefusedWait:
// the cause is on its side, and hammering it would not help.
func TestReporterBacksOffWhenRefused(t *testing.T) {
	s := &sink{refuse: status.Error(codes.PermissionDenied, "not your pod")}
	addr, _ := serve(t, "127.0.0.1:0", s)
	startReporter(t, addr, NewRecorder(RecorderOptions{}), Options{RefusedWait: time.Hour})
	waitFor(t, "a stream", func() bool { return s.streams.Load() >= 1 })
	time.Sleep(500 * time.Millisecond) // 10 intervals
	if n := s.streams.Load(); n != 1 {
		t.Errorf("%d streams after a refusal; want 1 within RefusedWait", n)
	}
}

// A report of more rows than a message may carry is split, each message
// with the same interval.
func TestReportSplit(t *testing.T) {
	rec := NewRecorder(RecorderOptions{})
	for i := range MaxRowsPerMessage + 10 {
		rec.Row(Key{PeerPod: string(rune('a'+i%26)) + time.Duration(i).String()}).Connection()
	}
	r := NewReporter(Options{Recorder: rec, Info: func() *controlplanev1.ProxyInfo { return nil }})
	msgs := r.messages(10 * time.Second)
	if len(msgs) != 2 || len(msgs[0].Rows) != MaxRowsPerMessage || len(msgs[1].Rows) != 10 {
		t.Fatalf("got %d messages", len(msgs))
	}
	if msgs[1].Interval.AsDuration() != 10*time.Second {
		t.Errorf("second message's interval %v", msgs[1].Interval.AsDuration())
	}
}

// failingStream takes failAfter messages, then fails every Send.
type failingStream struct {
	grpc.ClientStreamingClient[controlplanev1.ReportRequest, controlplanev1.ReportResponse]
	failAfter int
	got       *[]*controlplanev1.ReportRequest
}

func (f *failingStream) Send(m *controlplanev1.ReportRequest) error {
	if f.failAfter == 0 {
		return status.Error(codes.Unavailable, "connection reset")
	}
	f.failAfter--
	*f.got = append(*f.got, m)
	return nil
}

// streamsClient opens the failing stream first, then streams that take
// everything.
type streamsClient struct {
	first *failingStream
	got   []*controlplanev1.ReportRequest
	opens int
}

func (c *streamsClient) Report(context.Context, ...grpc.CallOption) (grpc.ClientStreamingClient[controlplanev1.ReportRequest, controlplanev1.ReportResponse], error) {
	c.opens++
	if c.opens == 1 {
		c.first.got = &c.got
		return c.first, nil
	}
	return &failingStream{failAfter: -1, got: &c.got}, nil
}

// A report split in messages whose stream fails after the first goes on
// on a new stream from the second: the first is not sent twice.
func TestSplitReportResumesWhereTheStreamFailed(t *testing.T) {
	c := &streamsClient{first: &failingStream{failAfter: 1}}
	r := NewReporter(Options{Client: c, Log: quiet})
	msgs := []*controlplanev1.ReportRequest{{Rows: []*controlplanev1.TrafficRow{{Requests: 1}}}, {Rows: []*controlplanev1.TrafficRow{{Requests: 2}}}}
	if !r.send(context.Background(), msgs) {
		t.Fatal("the report was not sent on the second stream")
	}
	if c.opens != 2 || len(c.got) != 2 || c.got[0] != msgs[0] || c.got[1] != msgs[1] {
		t.Errorf("%d streams opened, messages taken %v: want 2 streams, each message once", c.opens, c.got)
	}
}
