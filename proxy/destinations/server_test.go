package destinations

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// fakeServer is a DiscoveryService whose answers the test sets, served
// over loopback on an address that stays the same across stop and start.
// Like the real one, each stream sends the current answer, then each new
// one; unlike it, it does not drop an answer equal to the last, so that
// the client's own check is what is tested.
type fakeServer struct {
	controlplanev1.UnimplementedDiscoveryServiceServer

	addr string
	srv  *grpc.Server

	mu sync.Mutex
	// changed is closed and replaced on every change, to wake the streams.
	changed chan struct{}
	out     map[string]*controlplanev1.OutboundResponse
	refuse  map[string]error // a stream for the destination ends with it
	// closeAt[dest] = n > 0 ends a stream normally after its nth answer;
	// -1 ends it before any.
	closeAt map[string]int
	in      *controlplanev1.InboundResponse
	// For each destination ("inbound" for Inbound): when its streams
	// were opened, how many are open, how many answers were sent.
	opened map[string][]time.Time
	active map[string]int
	sent   map[string]int
	// requests are the namespaces and pods the streams asked for.
	requests []string
}

const inboundKey = "inbound"

func startServer(t testing.TB) *fakeServer {
	t.Helper()
	f := &fakeServer{
		changed: make(chan struct{}),
		out:     map[string]*controlplanev1.OutboundResponse{},
		refuse:  map[string]error{},
		closeAt: map[string]int{},
		opened:  map[string][]time.Time{},
		active:  map[string]int{},
		sent:    map[string]int{},
	}
	f.start(t)
	return f
}

// start serves on f.addr, or on a new port the first time.
func (f *fakeServer) start(t testing.TB) {
	t.Helper()
	addr := f.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ln, err = net.Listen("tcp", addr); err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("listening on %s: %v", addr, err)
	}
	f.addr = ln.Addr().String()
	f.srv = grpc.NewServer()
	controlplanev1.RegisterDiscoveryServiceServer(f.srv, f)
	go func() { _ = f.srv.Serve(ln) }()
}

// stop closes the listener and every connection, at once.
func (f *fakeServer) stop() { f.srv.Stop() }

// update changes the server's state under its lock and wakes the streams.
func (f *fakeServer) update(change func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change()
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeServer) setOutbound(dest string, r *controlplanev1.OutboundResponse) {
	f.update(func() { f.out[dest] = r })
}

func (f *fakeServer) refuseOutbound(dest string, err error) {
	f.update(func() {
		if err == nil {
			delete(f.refuse, dest)
		} else {
			f.refuse[dest] = err
		}
	})
}

func (f *fakeServer) closeOutbound(dest string, n int) {
	f.update(func() { f.closeAt[dest] = n })
}

func (f *fakeServer) setInbound(r *controlplanev1.InboundResponse) {
	f.update(func() { f.in = r })
}

func (f *fakeServer) streamsOpened(key string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.opened[key]...)
}

func (f *fakeServer) streamsActive(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.active[key]
}

func (f *fakeServer) answersSent(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sent[key]
}

func (f *fakeServer) begin(key, request string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opened[key] = append(f.opened[key], time.Now())
	f.active[key]++
	f.requests = append(f.requests, request)
}

func (f *fakeServer) end(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.active[key]--
}

func (f *fakeServer) Outbound(req *controlplanev1.OutboundRequest, stream controlplanev1.DiscoveryService_OutboundServer) error {
	key := req.GetDestination()
	f.begin(key, req.GetNamespace())
	defer f.end(key)
	return serve(f, stream, func() (*controlplanev1.OutboundResponse, error) {
		return f.out[key], f.refuse[key]
	}, key)
}

func (f *fakeServer) Inbound(req *controlplanev1.InboundRequest, stream controlplanev1.DiscoveryService_InboundServer) error {
	f.begin(inboundKey, req.GetNamespace()+"/"+req.GetPod())
	defer f.end(inboundKey)
	return serve(f, stream, func() (*controlplanev1.InboundResponse, error) { return f.in, nil }, inboundKey)
}

// serve sends current() each time it changes, until it returns an error,
// the stream reaches closeAt[key] answers, or the client goes.
func serve[M any](f *fakeServer, stream grpc.ServerStreamingServer[M], current func() (*M, error), key string) error {
	var last *M
	sends := 0
	for {
		f.mu.Lock()
		m, err := current()
		closeAt, changed := f.closeAt[key], f.changed
		f.mu.Unlock()
		if err != nil {
			return err
		}
		if closeAt != 0 && sends >= max(closeAt, 0) {
			return nil
		}
		if m != nil && m != last {
			if err := stream.Send(m); err != nil {
				return err
			}
			sends++
			last = m
			f.mu.Lock()
			f.sent[key]++
			f.mu.Unlock()
			continue
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// harness is a Client running against a fakeServer.
type harness struct {
	srv  *fakeServer
	c    *Client
	logs *logBuffer
	// stop ends Run and waits for it.
	stop func()
}

func newHarness(t testing.TB, opts ...func(*Options)) *harness {
	t.Helper()
	srv := startServer(t)
	conn, err := grpc.NewClient("passthrough:///"+srv.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Reach a restarted server soon: gRPC's own reconnect backoff
		// grows to 2 minutes by default.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 200 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	o := Options{
		Client:             controlplanev1.NewDiscoveryServiceClient(conn),
		Namespace:          "shop",
		Pod:                "web-0",
		FirstAnswerTimeout: 300 * time.Millisecond,
		IdleTimeout:        time.Minute,
		BackoffMin:         10 * time.Millisecond,
		BackoffMax:         200 * time.Millisecond,
		Log:                slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer:         prometheus.NewRegistry(),
	}
	for _, opt := range opts {
		opt(&o)
	}
	h := &harness{srv: srv, c: New(o), logs: logs}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.c.Run(ctx)
	}()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(func() {
		h.stop()
		_ = conn.Close()
		srv.stop()
		if t.Failed() {
			t.Logf("client logs:\n%s", logs)
		}
	})
	return h
}

// logBuffer collects a logger's output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// count returns how many lines hold s.
func (b *logBuffer) count(s string) int {
	n := 0
	for line := range strings.Lines(b.String()) {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// eventually fails t, saying what is wrong, unless cond holds within
// timeout.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, wrong func() string) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, wrong())
		}
	}
}

// answer is a known destination: Service name in shop with endpoints.
func answer(name string, endpoints ...string) *controlplanev1.OutboundResponse {
	svc := &controlplanev1.ServiceRef{Name: name, Namespace: "shop", Port: 80}
	b := &controlplanev1.Backend{Service: svc}
	for _, e := range endpoints {
		b.Endpoints = append(b.Endpoints, &controlplanev1.Endpoint{Address: e, Identity: "spiffe://cluster.local/ns/shop/sa/" + name})
	}
	return &controlplanev1.OutboundResponse{
		Known:    true,
		Service:  svc,
		Protocol: controlplanev1.Protocol_PROTOCOL_HTTP1,
		Backends: []*controlplanev1.Backend{b},
	}
}
