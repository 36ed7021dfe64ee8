package dataplane

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/proxy/report"
	"github.com/trellis-mesh/trellis/proxy/tracing"
)

// connInfo is what a request's handler knows of its connection.
type connInfo struct {
	entry *outEntry      // outbound: the destination
	dst   netip.AddrPort // the connection's original destination
	peer  string         // inbound: the calling proxy's SPIFFE ID
	// row is inbound's report row for peer, resolved at the first request.
	row atomic.Pointer[report.Row]
}

type connInfoKey struct{}

func withConnInfo(ctx context.Context, ci *connInfo) context.Context {
	return context.WithValue(ctx, connInfoKey{}, ci)
}

func connInfoFrom(ctx context.Context) *connInfo {
	ci, _ := ctx.Value(connInfoKey{}).(*connInfo)
	if ci == nil {
		return &connInfo{}
	}
	return ci
}

// connServer serves HTTP on connections handed to it one by one, each call
// returning when its connection is done, so that the forwarder counts it
// open until then. A TLS connection is served as the plain connection it
// is once the mesh's handshake is done: the wrapper hides its type from
// net/http, which would otherwise look for its own ALPN protocols.
type connServer struct {
	srv *http.Server
	ln  *chanListener
}

func newConnServer(h http.Handler, protocols *http.Protocols, log_ *slog.Logger) *connServer {
	cs := &connServer{ln: &chanListener{conns: make(chan net.Conn), done: make(chan struct{})}}
	cs.srv = &http.Server{
		Handler:           h,
		Protocols:         protocols,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 1000},
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          log.New(&slogWriter{log_}, "", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*trackedConn); ok {
				return withConnInfo(ctx, tc.info)
			}
			return ctx
		},
	}
	go func() { _ = cs.srv.Serve(cs.ln) }()
	return cs
}

// serve hands c to the server and waits until the server closes it or ctx
// ends (a drain that gave up), when it closes c itself.
func (cs *connServer) serve(ctx context.Context, c net.Conn) {
	tc := &trackedConn{Conn: c, info: connInfoFrom(ctx), closed: make(chan struct{})}
	select {
	case cs.ln.conns <- tc:
	case <-cs.ln.done:
		_ = c.Close()
		return
	}
	select {
	case <-tc.closed:
	case <-ctx.Done():
		_ = c.Close()
	}
}

func (cs *connServer) shutdown(ctx context.Context) error {
	err := cs.srv.Shutdown(ctx)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// trackedConn tells serve when the server closed it.
type trackedConn struct {
	net.Conn
	info   *connInfo
	once   sync.Once
	closed chan struct{}
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// chanListener is a net.Listener of the connections handed to it.
type chanListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }

// slogWriter sends net/http's log lines (TLS and protocol errors of
// clients) to the proxy's log at debug level.
type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(b []byte) (int, error) {
	w.log.Debug(strings.TrimSpace(string(b)), "component", "http")
	return len(b), nil
}

// hopHeaders are the connection's own, never forwarded (RFC 9110 7.6.1).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopHeaders removes the hop-by-hop headers, those that Connection
// names included, and keeps "TE: trailers", which gRPC needs end to end.
func removeHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	te := h.Get("Te")
	for _, k := range hopHeaders {
		h.Del(k)
	}
	if strings.Contains(strings.ToLower(te), "trailers") {
		h.Set("Te", "trailers")
	}
}

// copyResponse writes resp to w, its body flushed as it comes when its
// length is not known (streams, gRPC), and its trailers after it.
func copyResponse(w http.ResponseWriter, resp *http.Response) (int64, error) {
	defer func() { _ = resp.Body.Close() }()
	removeHopHeaders(resp.Header)
	dst := w.Header()
	for k, vs := range resp.Header {
		dst[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	var n int64
	var err error
	if resp.ContentLength == -1 {
		n, err = copyFlushing(w, resp.Body)
	} else {
		n, err = io.Copy(w, resp.Body)
	}
	for k, vs := range resp.Trailer {
		dst[http.TrailerPrefix+k] = vs
	}
	return n, err
}

// copyFlushing copies src to w, flushing after each read, so that each
// message of a stream reaches the client when it arrives.
func copyFlushing(w http.ResponseWriter, src io.Reader) (int64, error) {
	rc := http.NewResponseController(w)
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	var total int64
	for {
		n, err := src.Read(*buf)
		if n > 0 {
			written, werr := w.Write((*buf)[:n])
			total += int64(written)
			if werr != nil {
				return total, werr
			}
			if ferr := rc.Flush(); ferr != nil {
				return total, ferr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func isGRPC(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// gRPC status codes the proxy answers with.
const (
	codeUnimplemented    = 12
	codePermissionDenied = 7
	codeUnavailable      = 14
	codeDeadlineExceeded = 4
)

func codeForStatus(status int) int {
	if status == http.StatusGatewayTimeout {
		return codeDeadlineExceeded
	}
	return codeUnavailable
}

// proxyError answers a request that the proxy could not forward: with an
// HTTP status, or for gRPC a trailers-only response with a gRPC status, and
// the reason in trellis-proxy-error.
func proxyError(w http.ResponseWriter, grpc bool, status, grpcCode int, msg string) {
	h := w.Header()
	h.Set(headerProxyError, msg)
	if grpc {
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", strconv.Itoa(grpcCode))
		h.Set("Grpc-Message", msg)
		w.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
}

// logRequest writes a request's access log line: JSON, one per request, as
// Envoy's access log is read by mesh users.
func (p *Proxy) logRequest(dir string, r *http.Request, start time.Time, status int, src, endpoint, dst string, retries int, err error) {
	attrs := []any{
		"direction", dir,
		"method", r.Method,
		"authority", r.Host,
		"path", r.URL.Path,
		"protocol", r.Proto,
		"status", status,
		"durationMs", float64(time.Since(start).Microseconds()) / 1000,
		"src", src,
		"dst", dst,
	}
	if endpoint != "" {
		attrs = append(attrs, "endpoint", endpoint)
	}
	if retries > 0 {
		attrs = append(attrs, "retries", retries)
	}
	if tp := r.Header.Get("Traceparent"); tp != "" {
		attrs = append(attrs, "traceparent", tp)
	}
	if err != nil {
		attrs = append(attrs, "error", err.Error())
	}
	p.access.Info("http", attrs...)
}

// startSpan reads the trace context of a request (in), starts this proxy's
// span of it, and writes the context that the request leaves with (out):
// this span as the parent. A request without a trace starts one, sampled
// at the configured share. nil when tracing is off or the trace is not
// sampled; the context is propagated either way.
func (p *Proxy) startSpan(in, out http.Header, kind tracing.Kind, name string, start time.Time) *tracing.Span {
	if p.tracer == nil {
		return nil
	}
	tc, ok := tracing.Extract(in)
	if !ok {
		tc = tracing.Context{Trace: tracing.NewTraceID()}
		tc.Sampled = tracing.Sample(tc.Trace, p.tracer.SamplingPercent())
	}
	id := tracing.NewSpanID()
	tracing.Inject(out, tc.Trace, id, tc.Sampled)
	if !tc.Sampled {
		return nil
	}
	return &tracing.Span{Trace: tc.Trace, ID: id, Parent: tc.Parent, Name: name, Kind: kind, Start: start, Attributes: map[string]string{}}
}

// endSpan ends a span with the request's outcome and queues it for export.
func (p *Proxy) endSpan(s *tracing.Span, status int, attrs ...string) {
	if s == nil {
		return
	}
	s.End = time.Now()
	s.Status = status
	s.Error = status == 0 || status >= 500
	for i := 0; i+1 < len(attrs); i += 2 {
		if attrs[i+1] != "" {
			s.Attributes[attrs[i]] = attrs[i+1]
		}
	}
	p.tracer.Export(*s)
}
