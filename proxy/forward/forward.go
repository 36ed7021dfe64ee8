package forward

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/proxy/redirect"
)

// Direction is which way a forwarder's connections go.
type Direction string

const (
	// Outbound connections come from the app and go out to the network.
	Outbound Direction = "outbound"
	// Inbound connections come from the network and go to the app.
	Inbound Direction = "inbound"
)

// DialFunc connects to a connection's destination.
type DialFunc func(ctx context.Context, dst netip.AddrPort) (net.Conn, error)

// Handler takes over an accepted connection whose original destination is
// known and is not the proxy itself: the data plane's protocol detection,
// discovery, mTLS and HTTP routing. It owns c and returns once it is done
// with it; ctx ends when a drain gives up, and everything the handler opened
// for c must then close. Relay and DialRelay do what a Forwarder without a
// Handler does.
type Handler func(ctx context.Context, f *Forwarder, c net.Conn, dst netip.AddrPort)

// Options configure a Forwarder; only Metrics is required.
type Options struct {
	// Handler takes over each connection; without one, the connection is
	// relayed to its destination as it is.
	Handler Handler
	// Destination finds where an accepted connection was going;
	// OriginalDestination when nil.
	Destination func(net.Conn) (netip.AddrPort, error)
	// Dial connects to the destination; when nil, a plain TCP dial, which
	// inbound is redirect.DialApp's.
	Dial DialFunc
	// ConnectTimeout bounds Dial; 10 s when zero.
	ConnectTimeout time.Duration
	// Log is for what goes wrong; slog.Default when nil.
	Log *slog.Logger
	// AccessLog gets one line per connection when it closes; none when nil.
	AccessLog *slog.Logger
	Metrics   *Metrics
}

// Forwarder accepts connections on one or more listeners of one direction
// and relays each to its destination. Its zero value is not usable; call New.
type Forwarder struct {
	dir         Direction
	destination func(net.Conn) (netip.AddrPort, error)
	dial        DialFunc
	handler     Handler
	timeout     time.Duration
	log         *slog.Logger
	access      *slog.Logger
	m           counters

	// ctx ends when Shutdown gives up waiting, to abandon dials in flight.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	relays    map[*relay]struct{}
	closing   bool          // no more listeners or connections
	forced    bool          // open connections were closed under them
	idle      chan struct{} // closed when closing and relays is empty
}

// relay is one accepted connection and, once dialed, its server side.
type relay struct {
	client net.Conn
	server net.Conn // guarded by Forwarder.mu
}

// countEvery is how many bytes a copy moves before it adds them to the
// byte counters, so that a long-lived connection shows its traffic before
// it closes. Each chunk is one more pass of a loop, not a syscall.
const countEvery = 256 << 10

// New returns a forwarder of direction d.
func New(d Direction, o Options) *Forwarder {
	f := &Forwarder{
		dir:         d,
		destination: o.Destination,
		dial:        o.Dial,
		handler:     o.Handler,
		timeout:     o.ConnectTimeout,
		log:         o.Log,
		access:      o.AccessLog,
		m:           o.Metrics.forDirection(d),
		listeners:   map[net.Listener]struct{}{},
		relays:      map[*relay]struct{}{},
		idle:        make(chan struct{}),
	}
	if f.destination == nil {
		f.destination = OriginalDestination
	}
	if f.timeout == 0 {
		f.timeout = 10 * time.Second
	}
	if f.dial == nil {
		f.dial = func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", dst.String())
		}
		if d == Inbound {
			// The inbound destination is the pod's app.
			f.dial = func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
				return redirect.DialApp(ctx, net.Dialer{}, "tcp", dst.String())
			}
		}
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	f.log = f.log.With("direction", string(d))
	f.ctx, f.cancel = context.WithCancel(context.Background())
	return f
}

// ErrClosed is returned by Serve after Shutdown.
var ErrClosed = errors.New("forwarder is shut down")

// Serve accepts connections on ln until Shutdown, when it returns nil, or
// until ln fails. It closes ln when it returns.
func (f *Forwarder) Serve(ln net.Listener) error {
	f.mu.Lock()
	if f.closing {
		f.mu.Unlock()
		_ = ln.Close()
		return ErrClosed
	}
	f.listeners[ln] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.listeners, ln)
		f.mu.Unlock()
		_ = ln.Close()
	}()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if f.isClosing() {
				return nil
			}
			if !outOfResources(err) {
				return err
			}
			// Out of file descriptors or memory: wait for connections to
			// end, as net/http does, rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			f.log.Error("accepting a connection; retrying", "listener", ln.Addr().String(), "error", err, "retryIn", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		r := &relay{client: c}
		if !f.track(r) {
			reset(c)
			continue
		}
		go f.handle(r)
	}
}

func (f *Forwarder) handle(r *relay) {
	f.m.opened.Inc()
	defer f.untrack(r)
	defer f.m.closed.Inc()

	client := r.client
	local := addrPortOf(client.LocalAddr())
	dst, err := f.destination(client)
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	switch {
	case err != nil:
		f.m.noOriginal.Inc()
		f.log.Warn("closing a connection whose original destination is unknown: was it redirected to the proxy, or did it connect to the proxy's port directly?",
			"client", client.RemoteAddr().String(), "local", local.String(), "error", err)
		reset(client)
		return
	case dst == local:
		// Someone connected to the proxy's port directly. Relaying the
		// connection would connect the proxy to itself, over and over.
		f.m.notRedirected.Inc()
		f.log.Warn("closing a connection that was not redirected: the proxy's ports take only connections that trellis-init's rules send there",
			"client", client.RemoteAddr().String(), "local", local.String())
		reset(client)
		return
	}

	if f.handler != nil {
		f.handler(withRelay(f.ctx, r), f, client, dst)
		return
	}
	f.DialRelay(withRelay(f.ctx, r), client, dst)
}

type relayKey struct{}

func withRelay(ctx context.Context, r *relay) context.Context {
	return context.WithValue(ctx, relayKey{}, r)
}

// DialRelay connects to dst and relays client to it, as a Forwarder without
// a Handler does; ctx must be the one the Handler got.
func (f *Forwarder) DialRelay(ctx context.Context, client net.Conn, dst netip.AddrPort) {
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	server, err := f.dial(dctx, dst)
	cancel()
	if err != nil {
		// The app would have had its connection refused or timed out;
		// a reset is as close as we can get once we have accepted it.
		f.ConnectFailed(client, dst, err)
		f.accessLog(client, dst, start, 0, 0, err)
		return
	}
	f.Relay(ctx, client, server, dst, start)
}

// ConnectFailed counts and logs a destination that could not be reached,
// and resets client.
func (f *Forwarder) ConnectFailed(client net.Conn, dst netip.AddrPort, err error) {
	f.m.connect.Inc()
	f.log.Debug("connecting to the destination", "client", client.RemoteAddr().String(), "destination", dst.String(), "error", err)
	reset(client)
}

// Relay copies bytes both ways between client and server until both are
// done, counting them and writing the access log line; ctx must be the one
// the Handler got, so that a drain that gives up closes server too. Between
// two plain TCP connections (or wrappers that unwrap to them) the copy
// splices.
func (f *Forwarder) Relay(ctx context.Context, client, server net.Conn, dst netip.AddrPort, start time.Time) {
	if r, ok := ctx.Value(relayKey{}).(*relay); ok {
		f.mu.Lock()
		forced := f.forced
		if !forced {
			r.server = server
		}
		f.mu.Unlock()
		if forced {
			_ = server.Close()
			_ = client.Close()
			return
		}
	}
	sent, received, err := pipe(client, server, f.m.fromClient, f.m.fromServer)
	f.accessLog(client, dst, start, sent, received, err)
}

// Reset closes c with a RST: for a connection the proxy refuses. A
// wrapper (protocol detection's) is unwrapped to its TCP connection.
func Reset(c net.Conn) {
	for {
		u, ok := c.(interface{ Unwrap() net.Conn })
		if !ok {
			break
		}
		c = u.Unwrap()
	}
	reset(c)
}

// pipe copies bytes both ways between client and server. When one side
// finishes sending, the other is half-closed, so that protocols which end
// a request with a FIN still work; when both have, both are closed. An
// error on either side resets both, so each peer learns that the other
// went away instead of waiting.
func pipe(client, server net.Conn, fromClient, fromServer prometheus.Counter) (sent, received int64, err error) {
	type result struct {
		n   int64
		err error
	}
	up := make(chan result, 1)
	go func() {
		n, err := copyCounted(server, client, fromClient)
		if err != nil {
			abort(client, server)
		}
		up <- result{n, err}
	}()
	received, errDown := copyCounted(client, server, fromServer)
	if errDown != nil {
		abort(client, server)
	}
	u := <-up
	_ = client.Close()
	_ = server.Close()
	return u.n, received, errors.Join(quiet(u.err), quiet(errDown))
}

// copyCounted copies src to dst until src ends, then half-closes dst. Between
// two TCP connections io.Copy splices.
func copyCounted(dst, src net.Conn, counter prometheus.Counter) (int64, error) {
	lr := &io.LimitedReader{R: src}
	var total int64
	for {
		lr.N = countEvery
		n, err := io.Copy(dst, lr)
		total += n
		counter.Add(float64(n))
		if err != nil {
			return total, err
		}
		if lr.N > 0 { // src ended before the chunk did
			break
		}
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		return total, cw.CloseWrite()
	}
	return total, dst.Close()
}

// abort closes both connections with a reset.
func abort(a, b net.Conn) {
	reset(a)
	reset(b)
}

// reset closes c with a RST rather than a FIN.
func reset(c net.Conn) {
	if t, ok := c.(*net.TCPConn); ok {
		_ = t.SetLinger(0)
	}
	_ = c.Close()
}

// quiet drops the error of a copy that stopped because the other copy
// closed its connections: that copy's error is the one that matters.
func quiet(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (f *Forwarder) accessLog(client net.Conn, dst netip.AddrPort, start time.Time, sent, received int64, err error) {
	if f.access == nil {
		return
	}
	attrs := []any{
		"direction", string(f.dir),
		"client", client.RemoteAddr().String(),
		"destination", dst.String(),
		"bytesFromClient", sent,
		"bytesFromServer", received,
		"durationMs", time.Since(start).Milliseconds(),
	}
	if err != nil {
		attrs = append(attrs, "error", err.Error())
	}
	f.access.Info("tcp", attrs...)
}

// Shutdown stops accepting connections, then waits until the open ones end
// or ctx is done, when it closes them and returns ctx's error.
func (f *Forwarder) Shutdown(ctx context.Context) error {
	f.mu.Lock()
	if !f.closing {
		f.closing = true
		for ln := range f.listeners {
			_ = ln.Close()
		}
		if len(f.relays) == 0 {
			close(f.idle)
		}
	}
	f.mu.Unlock()

	select {
	case <-f.idle:
		return nil
	case <-ctx.Done():
	}
	f.mu.Lock()
	f.forced = true
	for r := range f.relays {
		_ = r.client.Close()
		if r.server != nil {
			_ = r.server.Close()
		}
	}
	f.mu.Unlock()
	f.cancel()
	<-f.idle // closing every socket ends every relay promptly
	return ctx.Err()
}

// Open is the number of connections being handled.
func (f *Forwarder) Open() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.relays)
}

func (f *Forwarder) isClosing() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closing
}

func (f *Forwarder) track(r *relay) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing {
		return false
	}
	f.relays[r] = struct{}{}
	return true
}

func (f *Forwarder) untrack(r *relay) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.relays, r)
	if f.closing && len(f.relays) == 0 {
		close(f.idle)
	}
}

// outOfResources reports whether an accept failed for want of file
// descriptors, buffers or memory, which pass when connections close.
func outOfResources(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
