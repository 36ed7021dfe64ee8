package forward

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// These tests run the forwarder over real loopback TCP. Without
// trellis-init's rules nothing is redirected, so most tests tell the
// forwarder where connections were going; the ones about unredirected
// connections use the real SO_ORIGINAL_DST. The netns test in cmd/proxy
// covers real redirection.

// proxy is a forwarder on 127.0.0.1 that sends every connection to dst.
type proxy struct {
	*Forwarder
	addr    string
	metrics *Metrics
	dials   atomic.Int64
}

func startProxy(t *testing.T, dst func(net.Conn) (netip.AddrPort, error), opts ...func(*Options)) *proxy {
	t.Helper()
	p := &proxy{metrics: NewMetrics(prometheus.NewRegistry())}
	o := Options{
		Destination: dst,
		Metrics:     p.metrics,
		Log:         slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
	for _, opt := range opts {
		opt(&o)
	}
	d := &net.Dialer{}
	o.Dial = func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
		p.dials.Add(1)
		return d.DialContext(ctx, "tcp", dst.String())
	}
	p.Forwarder = New(Outbound, o)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return p
}

// to is a Destination that says every connection was going to addr.
func to(addr string) func(net.Conn) (netip.AddrPort, error) {
	ap := netip.MustParseAddrPort(addr)
	return func(net.Conn) (netip.AddrPort, error) { return ap, nil }
}

// serve runs handle for every connection to a new loopback listener.
func serve(t *testing.T, handle func(*net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return ln.Addr().String()
}

// echo writes back what it reads, and half-closes when the client does.
func echo(c *net.TCPConn) {
	if _, err := io.Copy(c, c); err == nil {
		_ = c.CloseWrite()
	}
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c.(*net.TCPConn)
}

func TestBothWays(t *testing.T) {
	p := startProxy(t, to(serve(t, echo)))
	c := dial(t, p.addr)
	for _, msg := range []string{"hello", "again"} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if string(got) != msg {
			t.Errorf("read %q, want %q", got, msg)
		}
	}
	_ = c.CloseWrite()
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Errorf("after half-close: read %q, %v; want EOF", rest, err)
	}
	waitClosed(t, p.Forwarder)
	for name, tc := range map[string]struct {
		c    prometheus.Counter
		want float64
	}{
		"opened":      {p.metrics.opened.WithLabelValues("outbound"), 1},
		"closed":      {p.metrics.closed.WithLabelValues("outbound"), 1},
		"from client": {p.metrics.bytes.WithLabelValues("outbound", "client"), 10},
		"from server": {p.metrics.bytes.WithLabelValues("outbound", "server"), 10},
	} {
		if got := value(tc.c); got != tc.want {
			t.Errorf("%s = %v, want %v", name, got, tc.want)
		}
	}
}

// A client that half-closes still gets the server's answer, and a server
// that half-closes still gets the client's data: FINs travel through the
// proxy one way at a time.
func TestHalfClose(t *testing.T) {
	t.Run("client first", func(t *testing.T) {
		// The server reads everything, then answers with its length.
		srv := serve(t, func(c *net.TCPConn) {
			b, err := io.ReadAll(c)
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(strings.Repeat("!", len(b))))
		})
		p := startProxy(t, to(srv))
		c := dial(t, p.addr)
		_, _ = c.Write([]byte("request"))
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "!!!!!!!" {
			t.Errorf("answer %q, %v; want 7 bangs", got, err)
		}
	})
	t.Run("server first", func(t *testing.T) {
		// The server greets and half-closes, then reads the client's
		// data to the end and reports it on a channel.
		heard := make(chan string, 1)
		srv := serve(t, func(c *net.TCPConn) {
			_, _ = c.Write([]byte("hi"))
			_ = c.CloseWrite()
			b, _ := io.ReadAll(c)
			heard <- string(b)
		})
		p := startProxy(t, to(srv))
		c := dial(t, p.addr)
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "hi" {
			t.Fatalf("greeting %q, %v", got, err)
		}
		_, _ = c.Write([]byte("still here"))
		_ = c.CloseWrite()
		select {
		case h := <-heard:
			if h != "still here" {
				t.Errorf("server heard %q", h)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("server heard nothing after it half-closed")
		}
	})
}

func TestLargeTransfer(t *testing.T) {
	const size = 64 << 20
	p := startProxy(t, to(serve(t, echo)))
	c := dial(t, p.addr)
	data := make([]byte, size)
	_, _ = rand.Read(data)
	go func() {
		_, _ = c.Write(data)
		_ = c.CloseWrite()
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil || n != size {
		t.Fatalf("read %d bytes, %v; want %d", n, err, size)
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Error("the bytes that came back differ from those sent")
	}
	waitClosed(t, p.Forwarder)
	for _, from := range []string{"client", "server"} {
		if got := value(p.metrics.bytes.WithLabelValues("outbound", from)); got != size {
			t.Errorf("bytes from %s = %v, want %d", from, got, size)
		}
	}
}

// Clients that connect and go away, or send junk and go away, cost the
// proxy nothing and leave it working.
func TestGarbageAndImmediateClose(t *testing.T) {
	p := startProxy(t, to(serve(t, echo)))
	for range 20 {
		c := dial(t, p.addr)
		_ = c.Close()
		c = dial(t, p.addr)
		_, _ = c.Write([]byte("\x16\x03\x01\x00\xff garbage \x00\r\n\r\n"))
		_ = c.SetLinger(0) // and a reset for good measure
		_ = c.Close()
	}
	waitClosed(t, p.Forwarder)
	c := dial(t, p.addr)
	_, _ = c.Write([]byte("ok"))
	got := make([]byte, 2)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ok" {
		t.Errorf("after the garbage: read %q, %v", got, err)
	}
}

// A connection made straight to the proxy's port, not redirected by
// netfilter, is closed without a dial: forwarding it would connect the
// proxy to itself.
func TestDirectConnectionIsRefused(t *testing.T) {
	t.Run("real SO_ORIGINAL_DST", func(t *testing.T) {
		p := startProxy(t, nil)
		assertRefused(t, p)
		// Conntrack may or may not be tracking loopback on this machine:
		// if it is, the original destination is the proxy itself; if not,
		// there is none.
		notRedirected := value(p.metrics.failed.WithLabelValues("outbound", ReasonNotRedirected))
		none := value(p.metrics.failed.WithLabelValues("outbound", ReasonNoOriginalDestination))
		if notRedirected+none != 1 {
			t.Errorf("failed{not_redirected} = %v, failed{no_original_destination} = %v; want one of them 1", notRedirected, none)
		}
	})
	t.Run("original destination is the proxy", func(t *testing.T) {
		p := startProxy(t, func(c net.Conn) (netip.AddrPort, error) { return addrPortOf(c.LocalAddr()), nil })
		assertRefused(t, p)
		if got := value(p.metrics.failed.WithLabelValues("outbound", ReasonNotRedirected)); got != 1 {
			t.Errorf("failed{not_redirected} = %v, want 1", got)
		}
	})
	t.Run("no original destination", func(t *testing.T) {
		p := startProxy(t, func(net.Conn) (netip.AddrPort, error) { return netip.AddrPort{}, ErrNoOriginalDestination })
		assertRefused(t, p)
		if got := value(p.metrics.failed.WithLabelValues("outbound", ReasonNoOriginalDestination)); got != 1 {
			t.Errorf("failed{no_original_destination} = %v, want 1", got)
		}
	})
}

// assertRefused connects to p and expects the connection to end at once,
// with nothing dialed.
func assertRefused(t *testing.T, p *proxy) {
	t.Helper()
	start := time.Now()
	if err := connectionEnd(t, p.addr); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("%v; want the connection closed", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("closed after %v, want promptly", d)
	}
	waitClosed(t, p.Forwarder)
	if d := p.dials.Load(); d != 0 {
		t.Errorf("%d dials, want none", d)
	}
}

// connectionEnd connects to addr, sends nothing, and returns the error
// that ends the connection: io.EOF, a reset, or a timeout after 2 s.
func connectionEnd(t *testing.T, addr string) error {
	t.Helper()
	c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
	if err != nil {
		return err // a reset can beat the dial's return
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 {
		t.Errorf("read %d bytes; want the connection closed", n)
	}
	return err
}

// A destination that refuses the connection gets the client a reset.
func TestConnectFailure(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	var access syncBuffer
	p := startProxy(t, to(closed), func(o *Options) { o.AccessLog = slog.New(slog.NewJSONHandler(&access, nil)) })
	if err := connectionEnd(t, p.addr); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("%v, want a reset", err)
	}
	waitClosed(t, p.Forwarder)
	if got := value(p.metrics.failed.WithLabelValues("outbound", ReasonConnect)); got != 1 {
		t.Errorf("failed{connect} = %v, want 1", got)
	}
	if !strings.Contains(access.String(), `"error":"dial tcp `+closed) {
		t.Errorf("access log %q does not name the dial error", access.String())
	}
}

func TestAccessLog(t *testing.T) {
	srv := serve(t, echo)
	var access syncBuffer
	p := startProxy(t, to(srv), func(o *Options) { o.AccessLog = slog.New(slog.NewJSONHandler(&access, nil)) })
	c := dial(t, p.addr)
	_, _ = c.Write([]byte("12345"))
	_ = c.CloseWrite()
	_, _ = io.ReadAll(c)
	waitClosed(t, p.Forwarder)

	var line struct {
		Msg             string
		Direction       string
		Client          string
		Destination     string
		BytesFromClient int64
		BytesFromServer int64
		Error           string
	}
	if err := json.Unmarshal(access.Bytes(), &line); err != nil {
		t.Fatalf("access log %q: %v", access.String(), err)
	}
	if line.Msg != "tcp" || line.Direction != "outbound" || line.Client != c.LocalAddr().String() ||
		line.Destination != srv || line.BytesFromClient != 5 || line.BytesFromServer != 5 || line.Error != "" {
		t.Errorf("access log line %+v", line)
	}
}

// Shutdown stops new connections at once and lets open ones finish.
func TestDrain(t *testing.T) {
	p := startProxy(t, to(serve(t, echo)))
	c := dial(t, p.addr)
	roundTrip(t, c, "before")

	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }()
	waitFor(t, "the listener to close", func() bool {
		n, err := net.Dial("tcp4", p.addr)
		if err == nil {
			_ = n.Close()
		}
		return err != nil
	})
	roundTrip(t, c, "during the drain")
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a connection open", err)
	case <-time.After(100 * time.Millisecond):
	}
	_ = c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last connection closed")
	}
}

// When the drain times out, the connections left are closed under their
// clients.
func TestDrainTimeout(t *testing.T) {
	p := startProxy(t, to(serve(t, echo)))
	c := dial(t, p.addr)
	roundTrip(t, c, "hello")

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("read %d, %v after the drain timed out; want the connection closed", n, err)
	}
	if p.Open() != 0 {
		t.Errorf("%d connections open after Shutdown", p.Open())
	}
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("read %q, %v; want %q", got, err, msg)
	}
}

// waitClosed waits for the forwarder to finish with every connection, so
// that its counters are final.
func waitClosed(t *testing.T, f *Forwarder) {
	t.Helper()
	waitFor(t, "the proxy to close its connections", func() bool { return f.Open() == 0 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

func (s *syncBuffer) String() string { return string(s.Bytes()) }

// value is a counter's value. (client_golang's testutil would pull in a
// module that go.mod does not require.)
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
