package destinations

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// These tests run the client against an in-process DiscoveryService over
// real gRPC on loopback. Timeouts are short (FirstAnswerTimeout 300ms,
// backoff 10ms to 200ms) unless a test says otherwise.

const (
	web = "10.96.0.10:80"
	api = "10.96.0.11:8080"
)

func TestOutboundFirstAnswer(t *testing.T) {
	h := newHarness(t)
	want := answer("web", "10.0.0.1:8080", "10.0.0.2:8080")
	h.srv.setOutbound(web, want)

	d, err := h.c.Outbound(context.Background(), web)
	if err != nil {
		t.Fatalf("Outbound(%s): %v", web, err)
	}
	if got := d.Load(); !proto.Equal(got, want) {
		t.Fatalf("Load() = %v, want %v", got, want)
	}
	if d.String() != web {
		t.Errorf("String() = %q, want %q", d.String(), web)
	}
	again, err := h.c.Outbound(context.Background(), web)
	if err != nil || again != d {
		t.Errorf("second Outbound = %p, %v; want the same Destination %p", again, err, d)
	}
	if n := len(h.srv.streamsOpened(web)); n != 1 {
		t.Errorf("server saw %d streams for %s, want 1", n, web)
	}
	h.srv.mu.Lock()
	requests := h.srv.requests
	h.srv.mu.Unlock()
	if len(requests) != 1 || requests[0] != "shop" {
		t.Errorf("server saw requests for namespaces %q, want [shop]", requests)
	}
	if n := testutil.ToFloat64(h.c.metrics.destinations); n != 1 {
		t.Errorf("destinations gauge = %v, want 1", n)
	}
	if n := testutil.ToFloat64(h.c.metrics.outbound.streams); n != 1 {
		t.Errorf("outbound streams gauge = %v, want 1", n)
	}
}

func TestConcurrentFirstLookupsShareOneStream(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.FirstAnswerTimeout = 5 * time.Second })

	const callers = 16
	var wg sync.WaitGroup
	got := make([]*Destination, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() { got[i], errs[i] = h.c.Outbound(context.Background(), web) })
	}
	// The answer comes only once every caller is likely waiting.
	eventually(t, 2*time.Second, func() bool { return h.srv.streamsActive(web) == 1 }, func() string { return fmt.Sprintf("no stream for %s", web) })
	time.Sleep(50 * time.Millisecond)
	want := answer("web", "10.0.0.1:8080")
	h.srv.setOutbound(web, want)
	wg.Wait()

	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if got[i] != got[0] {
			t.Errorf("caller %d got Destination %p, caller 0 got %p", i, got[i], got[0])
		}
	}
	if !proto.Equal(got[0].Load(), want) {
		t.Errorf("Load() = %v, want %v", got[0].Load(), want)
	}
	if n := len(h.srv.streamsOpened(web)); n != 1 {
		t.Errorf("server saw %d streams for %s, want 1", n, web)
	}
}

func TestNoAnswerInTime(t *testing.T) {
	h := newHarness(t)
	// The server knows nothing of web yet: its stream stays silent.

	start := time.Now()
	_, err := h.c.Outbound(context.Background(), web)
	waited := time.Since(start)
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Outbound = %v, want ErrNoAnswer", err)
	}
	if waited < 300*time.Millisecond || waited > 2*time.Second {
		t.Errorf("Outbound waited %s, want FirstAnswerTimeout (300ms)", waited)
	}

	// The wait is over: the next call does not wait again.
	start = time.Now()
	if _, err := h.c.Outbound(context.Background(), web); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("second Outbound = %v, want ErrNoAnswer", err)
	}
	if waited := time.Since(start); waited > 100*time.Millisecond {
		t.Errorf("second Outbound waited %s, want it to return at once", waited)
	}

	// The watch kept going: a later call finds the answer.
	want := answer("web", "10.0.0.1:8080")
	h.srv.setOutbound(web, want)
	var d *Destination
	eventually(t, 2*time.Second, func() bool {
		d, err = h.c.Outbound(context.Background(), web)
		return err == nil
	}, func() string { return fmt.Sprintf("Outbound(%s) still fails: %v", web, err) })
	if !proto.Equal(d.Load(), want) {
		t.Errorf("Load() = %v, want %v", d.Load(), want)
	}
	if n := len(h.srv.streamsOpened(web)); n != 1 {
		t.Errorf("server saw %d streams for %s, want 1: the silent stream should have stayed open", n, web)
	}

	// A caller's context bounds its wait, and says so.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = h.c.Outbound(ctx, api)
	if !errors.Is(err, ErrNoAnswer) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Outbound with a 50ms context = %v, want ErrNoAnswer and DeadlineExceeded", err)
	}
	if waited := time.Since(start); waited > 250*time.Millisecond {
		t.Errorf("Outbound with a 50ms context waited %s", waited)
	}
}

func TestUpdatesAndEqualAnswers(t *testing.T) {
	h := newHarness(t)
	v1 := answer("web", "10.0.0.1:8080")
	h.srv.setOutbound(web, v1)
	d, err := h.c.Outbound(context.Background(), web)
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan *controlplanev1.OutboundResponse, 10)
	stop := d.OnChange(func(r *controlplanev1.OutboundResponse) { changes <- r })
	next := func() *controlplanev1.OutboundResponse {
		t.Helper()
		select {
		case r := <-changes:
			return r
		case <-time.After(2 * time.Second):
			t.Fatal("OnChange was not called")
			return nil
		}
	}

	v2 := answer("web", "10.0.0.1:8080", "10.0.0.2:8080")
	h.srv.setOutbound(web, v2)
	if got := next(); !proto.Equal(got, v2) {
		t.Fatalf("OnChange got %v, want %v", got, v2)
	}
	if got := d.Load(); !proto.Equal(got, v2) {
		t.Fatalf("Load() = %v, want %v", got, v2)
	}
	loaded := d.Load()

	// The server sends v2 again (a new message, equal to the last): the
	// client keeps what it has and tells no one.
	h.srv.setOutbound(web, proto.Clone(v2).(*controlplanev1.OutboundResponse))
	eventually(t, 2*time.Second, func() bool { return h.srv.answersSent(web) == 3 }, func() string { return "server did not send the equal answer" })
	v3 := answer("web", "10.0.0.2:8080")
	h.srv.setOutbound(web, v3)
	if got := next(); !proto.Equal(got, v3) {
		t.Fatalf("after an equal answer, OnChange got %v, want the next different one %v", got, v3)
	}
	if loaded == d.Load() {
		t.Error("Load() did not change to v3")
	}
	if n := testutil.ToFloat64(h.c.metrics.outbound.updates); n != 3 {
		t.Errorf("updates counter = %v, want 3 (v1, v2, v3; not the equal one)", n)
	}

	// After stop, f is not called again.
	stop()
	stop() // stop twice is fine
	v4 := answer("web")
	h.srv.setOutbound(web, v4)
	eventually(t, 2*time.Second, func() bool { return proto.Equal(d.Load(), v4) }, func() string { return fmt.Sprintf("Load() = %v, want %v", d.Load(), v4) })
	select {
	case r := <-changes:
		t.Errorf("OnChange called after stop with %v", r)
	default:
	}
}

func TestServerDownAndBack(t *testing.T) {
	h := newHarness(t)
	v1 := answer("web", "10.0.0.1:8080")
	h.srv.setOutbound(web, v1)
	d, err := h.c.Outbound(context.Background(), web)
	if err != nil {
		t.Fatal(err)
	}

	h.srv.stop()
	eventually(t, 2*time.Second, func() bool { return h.logs.count("discovery stream lost") == 1 }, func() string { return "no log of the lost stream" })

	// The proxy keeps serving what it knows.
	if got := d.Load(); !proto.Equal(got, v1) {
		t.Errorf("Load() while the server is down = %v, want the last answer %v", got, v1)
	}
	start := time.Now()
	again, err := h.c.Outbound(context.Background(), web)
	if err != nil || again != d {
		t.Errorf("Outbound(%s) while the server is down = %p, %v; want %p", web, again, err, d)
	}
	if waited := time.Since(start); waited > 50*time.Millisecond {
		t.Errorf("Outbound of a known destination waited %s while the server is down", waited)
	}

	// A new destination gets no answer, after FirstAnswerTimeout.
	start = time.Now()
	_, err = h.c.Outbound(context.Background(), api)
	waited := time.Since(start)
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Outbound(%s) while the server is down = %v, want ErrNoAnswer", api, err)
	}
	if waited < 300*time.Millisecond || waited > 2*time.Second {
		t.Errorf("Outbound(%s) waited %s, want FirstAnswerTimeout (300ms)", api, waited)
	}

	// Back on the same address, with news: both streams come back.
	time.Sleep(300 * time.Millisecond) // long enough for the backoff to reach its maximum
	v2 := answer("web", "10.0.0.3:8080")
	h.srv.setOutbound(web, v2)
	h.srv.setOutbound(api, answer("api", "10.0.1.1:8080"))
	h.srv.start(t)
	eventually(t, 3*time.Second, func() bool { return proto.Equal(d.Load(), v2) }, func() string { return fmt.Sprintf("Load() = %v after the server came back, want %v", d.Load(), v2) })
	eventually(t, 3*time.Second, func() bool {
		_, err = h.c.Outbound(context.Background(), api)
		return err == nil
	}, func() string { return fmt.Sprintf("Outbound(%s) after the server came back: %v", api, err) })
	eventually(t, time.Second, func() bool { return h.logs.count("discovery stream restored after") == 2 }, func() string { return "no log of both restored streams" })

	if n := testutil.ToFloat64(h.c.metrics.outbound.reconnects); n < 2 {
		t.Errorf("reconnects counter = %v, want at least 2", n)
	}
	if n := testutil.ToFloat64(h.c.metrics.outbound.streams); n != 2 {
		t.Errorf("streams gauge = %v, want 2", n)
	}
}

func TestRefusedIsRetriedSlowly(t *testing.T) {
	const backoffMax = 250 * time.Millisecond
	h := newHarness(t, func(o *Options) {
		o.FirstAnswerTimeout = 5 * time.Second
		o.BackoffMax = backoffMax
	})
	const why = "caller shop/web may not watch namespace default: label namespace shop trellis-injection=enabled"
	h.srv.refuseOutbound(web, status.Error(codes.PermissionDenied, why))

	// The refusal ends the first wait early, with the server's words.
	start := time.Now()
	_, err := h.c.Outbound(context.Background(), web)
	if !errors.Is(err, ErrNoAnswer) || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Fatalf("Outbound(%s) = %v, want ErrNoAnswer with the server's message", web, err)
	}
	if waited := time.Since(start); waited > time.Second {
		t.Errorf("Outbound waited %s for a refused destination", waited)
	}

	// Retried every BackoffMax, logged once.
	eventually(t, 3*time.Second, func() bool { return len(h.srv.streamsOpened(web)) >= 4 }, func() string { return "refused stream not retried" })
	opened := h.srv.streamsOpened(web)
	for i := 1; i < len(opened); i++ {
		if gap := opened[i].Sub(opened[i-1]); gap < backoffMax*9/10 {
			t.Errorf("refused stream retried after %s, want BackoffMax (%s)", gap, backoffMax)
		}
	}
	if n := h.logs.count(why); n != 1 {
		t.Errorf("the refusal was logged %d times, want once", n)
	}

	// Fixed on the server: the next retry gets the answer.
	want := answer("web", "10.0.0.1:8080")
	h.srv.setOutbound(web, want)
	h.srv.refuseOutbound(web, nil)
	var d *Destination
	eventually(t, 2*time.Second, func() bool {
		d, err = h.c.Outbound(context.Background(), web)
		return err == nil
	}, func() string { return fmt.Sprintf("Outbound(%s) after the refusal was lifted: %v", web, err) })
	if !proto.Equal(d.Load(), want) {
		t.Errorf("Load() = %v, want %v", d.Load(), want)
	}

	// Refused again while the client has an answer: it keeps it, and
	// logs the new refusal.
	h.srv.refuseOutbound(web, status.Error(codes.PermissionDenied, why))
	eventually(t, 2*time.Second, func() bool { return h.logs.count(why) == 2 }, func() string { return "the second refusal was not logged" })
	if again, err := h.c.Outbound(context.Background(), web); err != nil || again != d || !proto.Equal(d.Load(), want) {
		t.Errorf("Outbound after a refusal = %p, %v, holding %v; want %p holding %v", again, err, again.Load(), d, want)
	}
}

func TestClosedStreamReopensAtOnce(t *testing.T) {
	// A backoff this long shows which reopenings skipped it.
	h := newHarness(t, func(o *Options) {
		o.BackoffMin = 2 * time.Second
		o.BackoffMax = 8 * time.Second
	})
	h.srv.setOutbound(web, answer("web", "10.0.0.1:8080"))
	if _, err := h.c.Outbound(context.Background(), web); err != nil {
		t.Fatal(err)
	}

	// Each stream answers, then the server ends it normally (as at a
	// connection's maximum age): each is reopened at once.
	h.srv.closeOutbound(web, 1)
	eventually(t, 2*time.Second, func() bool { return len(h.srv.streamsOpened(web)) >= 6 }, func() string { return "closed streams were not reopened at once" })
	if n := h.logs.count("discovery stream lost"); n != 0 {
		t.Errorf("a normally closed stream was logged as lost %d times", n)
	}

	// Streams that end before answering are reopened with backoff after
	// the first.
	h.srv.closeOutbound(web, -1)
	time.Sleep(100 * time.Millisecond)
	before := len(h.srv.streamsOpened(web))
	time.Sleep(time.Second)
	if n := len(h.srv.streamsOpened(web)) - before; n > 4 {
		t.Errorf("%d streams opened in a second to a server that closes them at once, want backoff", n)
	}
}

func TestIdleDestinationsAreForgotten(t *testing.T) {
	const idle = 200 * time.Millisecond
	h := newHarness(t, func(o *Options) { o.IdleTimeout = idle })
	h.srv.setOutbound(web, answer("web", "10.0.0.1:8080"))
	h.srv.setOutbound(api, answer("api", "10.0.1.1:8080"))
	dWeb, err := h.c.Outbound(context.Background(), web)
	if err != nil {
		t.Fatal(err)
	}
	dAPI, err := h.c.Outbound(context.Background(), api)
	if err != nil {
		t.Fatal(err)
	}
	// api's balancer listens: it is in use without lookups.
	stopAPI := dAPI.OnChange(func(*controlplanev1.OutboundResponse) {})

	// Looked up often, web stays.
	for range 10 {
		time.Sleep(idle / 4)
		if d, err := h.c.Outbound(context.Background(), web); err != nil || d != dWeb {
			t.Fatalf("Outbound(%s) while in use = %p, %v; want %p", web, d, err, dWeb)
		}
	}
	if n := len(h.srv.streamsOpened(web)); n != 1 {
		t.Fatalf("server saw %d streams for %s in use, want 1", n, web)
	}

	// Left alone, it goes, with its stream.
	eventually(t, 2*time.Second, func() bool { return h.srv.streamsActive(web) == 0 }, func() string { return "the idle destination's stream is still open" })
	eventually(t, time.Second, func() bool { return testutil.ToFloat64(h.c.metrics.destinations) == 1 }, func() string {
		return fmt.Sprintf("destinations gauge = %v, want 1", testutil.ToFloat64(h.c.metrics.destinations))
	})
	if h.srv.streamsActive(api) != 1 {
		t.Fatalf("the destination with a listener was forgotten")
	}
	// It keeps its last answer for whoever still holds it.
	if dWeb.Load() == nil {
		t.Error("a forgotten Destination lost its answer")
	}

	// Once its listener has gone, api goes too, its idle time counted
	// from then.
	stopAPI()
	time.Sleep(idle / 2)
	if h.srv.streamsActive(api) != 1 {
		t.Errorf("%s was forgotten before IdleTimeout since its listener left", api)
	}
	eventually(t, 2*time.Second, func() bool { return h.srv.streamsActive(api) == 0 }, func() string { return fmt.Sprintf("the stream of %s is still open", api) })
	eventually(t, time.Second, func() bool { return testutil.ToFloat64(h.c.metrics.destinations) == 0 }, func() string {
		return fmt.Sprintf("destinations gauge = %v, want 0", testutil.ToFloat64(h.c.metrics.destinations))
	})
	h.c.mu.RLock()
	left := len(h.c.dests)
	h.c.mu.RUnlock()
	if left != 0 {
		t.Errorf("%d destinations are still held", left)
	}

	// Asked again, web starts over with a fresh answer.
	fresh := answer("web", "10.0.0.9:8080")
	h.srv.setOutbound(web, fresh)
	d, err := h.c.Outbound(context.Background(), web)
	if err != nil {
		t.Fatal(err)
	}
	if d == dWeb || !proto.Equal(d.Load(), fresh) {
		t.Errorf("Outbound after forgetting = %p holding %v, want a new Destination holding %v", d, d.Load(), fresh)
	}
	if n := len(h.srv.streamsOpened(web)); n != 2 {
		t.Errorf("server saw %d streams for %s, want 2", n, web)
	}
}

func TestInbound(t *testing.T) {
	h := newHarness(t)
	s := h.c.Inbound(context.Background())
	if s.Load() != nil {
		t.Fatalf("Load() before any answer = %v, want nil", s.Load())
	}
	select {
	case <-s.Ready():
		t.Fatal("Ready before any answer")
	case <-time.After(50 * time.Millisecond):
	}

	v1 := &controlplanev1.InboundResponse{
		Ports:    []*controlplanev1.InboundPort{{Port: 8080, Protocol: controlplanev1.Protocol_PROTOCOL_HTTP1}},
		MtlsMode: controlplanev1.MTLSMode_MTLS_MODE_STRICT,
	}
	h.srv.setInbound(v1)
	select {
	case <-s.Ready():
	case <-time.After(2 * time.Second):
		t.Fatal("not Ready after the first answer")
	}
	if !proto.Equal(s.Load(), v1) {
		t.Errorf("Load() = %v, want %v", s.Load(), v1)
	}

	changes := make(chan *controlplanev1.InboundResponse, 1)
	defer s.OnChange(func(r *controlplanev1.InboundResponse) { changes <- r })()
	v2 := proto.Clone(v1).(*controlplanev1.InboundResponse)
	v2.Authorization = &controlplanev1.Authorization{DefaultDeny: true}
	h.srv.setInbound(v2)
	select {
	case got := <-changes:
		if !proto.Equal(got, v2) {
			t.Errorf("OnChange got %v, want %v", got, v2)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("OnChange was not called")
	}

	if again := h.c.Inbound(context.Background()); again != s {
		t.Errorf("second Inbound = %p, want %p", again, s)
	}
	if n := len(h.srv.streamsOpened(inboundKey)); n != 1 {
		t.Errorf("server saw %d Inbound streams, want 1", n)
	}
	h.srv.mu.Lock()
	requests := h.srv.requests
	h.srv.mu.Unlock()
	if len(requests) != 1 || requests[0] != "shop/web-0" {
		t.Errorf("server saw Inbound for %q, want [shop/web-0]", requests)
	}
}

func TestRunEndsWatches(t *testing.T) {
	h := newHarness(t)
	want := answer("web", "10.0.0.1:8080")
	h.srv.setOutbound(web, want)
	h.srv.setInbound(&controlplanev1.InboundResponse{MtlsMode: controlplanev1.MTLSMode_MTLS_MODE_PERMISSIVE})
	d, err := h.c.Outbound(context.Background(), web)
	if err != nil {
		t.Fatal(err)
	}
	s := h.c.Inbound(context.Background())
	<-s.Ready()

	h.stop()
	for _, key := range []string{web, inboundKey} {
		eventually(t, 2*time.Second, func() bool { return h.srv.streamsActive(key) == 0 }, func() string { return fmt.Sprintf("stream %s still open after Run ended", key) })
	}
	for _, m := range []kindMetrics{h.c.metrics.outbound, h.c.metrics.inbound} {
		if n := testutil.ToFloat64(m.streams); n != 0 {
			t.Errorf("streams gauge = %v after Run ended, want 0", n)
		}
	}
	// What was known stays known; nothing new is learned.
	if again, err := h.c.Outbound(context.Background(), web); err != nil || again != d || !proto.Equal(d.Load(), want) {
		t.Errorf("Outbound(%s) after Run = %p, %v; want %p holding %v", web, again, err, d, want)
	}
	start := time.Now()
	if _, err := h.c.Outbound(context.Background(), api); !errors.Is(err, ErrNoAnswer) {
		t.Errorf("Outbound(%s) after Run = %v, want ErrNoAnswer", api, err)
	}
	if waited := time.Since(start); waited > 100*time.Millisecond {
		t.Errorf("Outbound of a new destination after Run waited %s", waited)
	}
}

func TestBackoff(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, 15 * time.Second
	tests := map[string]struct {
		failures int
		ceil     time.Duration // the longest wait allowed
	}{
		"first failure":     {failures: 1, ceil: lo},
		"third failure":     {failures: 3, ceil: 4 * lo},
		"at the maximum":    {failures: 9, ceil: hi},
		"long past the max": {failures: 1000, ceil: hi},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var longest time.Duration
			for range 1000 {
				d := backoff(lo, hi, tc.failures)
				if d < 0 || d > tc.ceil {
					t.Fatalf("backoff = %s, want within [0, %s]", d, tc.ceil)
				}
				longest = max(longest, d)
			}
			// Full jitter spreads over the whole range.
			if longest < tc.ceil/2 {
				t.Errorf("longest of 1000 backoffs = %s, want close to %s", longest, tc.ceil)
			}
		})
	}
}
