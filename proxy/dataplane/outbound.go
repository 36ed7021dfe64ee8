package dataplane

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/detect"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/report"
	"github.com/trellis-mesh/trellis/proxy/tracing"
)

// Outbound is the outbound forwarder's Handler.
func (p *Proxy) Outbound(ctx context.Context, f *forward.Forwarder, c net.Conn, dst netip.AddrPort) {
	if p.dests == nil || !p.meshReady() {
		f.DialRelay(ctx, c, dst)
		return
	}
	e, err := p.outEntry(ctx, dst.String())
	if err != nil {
		// The control plane has not answered (yet): the destination may
		// be outside the mesh, and it is reached as it is.
		p.log.Debug("no discovery answer for the destination; relaying it as it is", "destination", dst.String(), "error", err)
		f.DialRelay(ctx, c, dst)
		return
	}
	st := e.current()
	if !st.known {
		f.DialRelay(ctx, c, dst)
		return
	}
	proto := detect.Opaque
	if st.protocol != controlplanev1.Protocol_PROTOCOL_TCP && !p.opaque[dst.Port()] {
		proto, c, err = detect.Detect(c, p.detectTimeout)
		if err != nil {
			p.log.Debug("reading the start of a connection", "destination", dst.String(), "error", err)
			forward.Reset(c)
			return
		}
	}
	p.m.detected(outboundDir, proto)
	switch proto {
	case detect.HTTP1, detect.HTTP2:
		p.outHTTP.serve(withConnInfo(ctx, &connInfo{entry: e, dst: dst}), c)
	default:
		p.outboundTCP(ctx, f, c, dst, st)
	}
}

// outboundTCP relays an opaque connection to an endpoint of the
// destination's first backend: the destination's own endpoints, or the pod
// dialed. A refused or failed connection tries another endpoint once.
func (p *Proxy) outboundTCP(ctx context.Context, f *forward.Forwarder, c net.Conn, dst netip.AddrPort, st *outState) {
	start := time.Now()
	b := st.backends[0]
	if !take(&b.limits.conns, &b.limits.maxConns) {
		p.m.overflowed(b.service, "connections")
		p.log.Debug("closing a connection over the destination's max_connections", "destination", dst.String())
		forward.Reset(c)
		return
	}
	defer b.limits.conns.Add(-1)
	var lastErr error
	for range 2 {
		h, err := b.lb.Pick()
		if err != nil {
			lastErr = err
			break
		}
		ep := h.Endpoint()
		server, err := p.dialEndpoint(ctx, ep, ALPNTCP, b.connectTimeout)
		if err != nil {
			h.ConnectFailed()
			lastErr = err
			continue
		}
		h.Done(start, nil)
		p.m.tcpOpened(outboundDir, b.service, ep.Identity != "")
		p.recordTCP(report.Key{Direction: controlplanev1.Direction_DIRECTION_OUTBOUND, PeerIdentity: ep.Identity, PeerPod: ep.Pod,
			Service: b.service, MTLS: ep.Identity != "" && p.id != nil})
		server, c = flushPeeked(c, server)
		if server == nil {
			forward.Reset(c)
			return
		}
		f.Relay(ctx, c, server, dst, start)
		return
	}
	f.ConnectFailed(c, dst, lastErr)
}

// dialEndpoint connects to ep: in mutual TLS with alpn when it is meshed
// and this proxy has an identity, else plain TCP.
func (p *Proxy) dialEndpoint(ctx context.Context, ep *controlplanev1.Endpoint, alpn string, timeout time.Duration) (net.Conn, error) {
	if ep.Identity != "" && p.id != nil {
		return p.dialMesh(ctx, ep.Address, ep.Identity, alpn, timeout)
	}
	if timeout <= 0 {
		timeout = p.connTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return p.dialer.DialContext(ctx, "tcp", ep.Address)
}

// flushPeeked writes to server the bytes that protocol detection read from
// c, and returns the connections to relay: c's own TCP connection when it
// can be had, so that the relay splices. A nil server means the write
// failed and server is closed.
func flushPeeked(c, server net.Conn) (net.Conn, net.Conn) {
	pc, ok := c.(interface {
		Buffered() int
		Unwrap() net.Conn
	})
	if !ok {
		return server, c
	}
	if n := pc.Buffered(); n > 0 {
		if _, err := io.CopyN(server, c, int64(n)); err != nil {
			_ = server.Close()
			return nil, c
		}
	}
	return server, pc.Unwrap()
}

// maxRetryBody is the largest request body kept to be sent again on a
// retry; a request with a larger (or unknown-length) body is not retried.
const maxRetryBody = 64 << 10

// serveOutbound forwards one request of the app: route, filters, backend,
// endpoint, retries.
func (p *Proxy) serveOutbound(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ci := connInfoFrom(r.Context())
	st := ci.entry.current()
	grpc := isGRPC(r)
	body := countBody(r)
	var (
		status, retries int
		endpoint        string
		failure         error
	)
	if p.access != nil {
		defer func() {
			p.logRequest(outboundDir, r, start, status, p.workload, endpoint, st.name, retries, failure)
		}()
	}

	rt, matched, ok := st.route(r)
	if !ok {
		status = http.StatusNotFound
		p.outboundLocal(st, rt, status, start, r, body)
		proxyError(w, grpc, status, codeUnimplemented, "no route of "+st.name+" matches the request")
		return
	}
	if rt.redirect != nil {
		status = redirect(w, r, rt.redirect, matched, ci.dst.Port())
		p.outboundLocal(st, rt, status, start, r, body)
		return
	}
	wb := rt.pickBackend()
	if wb == nil {
		status = http.StatusInternalServerError
		p.outboundLocal(st, rt, status, start, r, body)
		proxyError(w, grpc, status, codeUnavailable, "route "+rt.name+" has no backend that can be sent to")
		return
	}
	b := wb.b
	if !take(&b.limits.requests, &b.limits.maxRequests) {
		status = http.StatusServiceUnavailable
		p.m.overflowed(b.service, "requests")
		p.outboundLocal(st, rt, status, start, r, body)
		proxyError(w, grpc, status, codeUnavailable, b.name+" has max_pending_requests in flight from this pod already (its TrafficPolicy's connectionLimits)")
		return
	}
	defer b.limits.requests.Add(-1)
	timeout := rt.timeout
	if timeout == 0 {
		timeout = st.requestTimeout
	}
	ctx := r.Context()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}

	// The request as it leaves: rewritten, its headers modified by the
	// route, then by the backend.
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.Close = false
	removeHopHeaders(out.Header)
	if rw := rt.rewrite; rw != nil {
		if rw.Hostname != "" {
			out.Host = rw.Hostname
		}
		out.URL.Path = rewritePath(r.URL.Path, rw.FullPath, rw.PrefixPath, matched)
		out.URL.RawPath = ""
	}
	rt.requestHeaders.apply(out.Header)
	wb.requestHeaders.apply(out.Header)
	span := p.startSpan(r.Header, out.Header, tracing.KindClient, r.Method+" "+st.name, start)
	defer func() {
		p.endSpan(span, status, "trellis.direction", outboundDir, "http.request.method", r.Method, "url.path", r.URL.Path,
			"trellis.route", rt.name, "trellis.destination", b.name, "server.address", endpoint, "trellis.source", p.workload)
	}()

	// A request may be sent again when nothing of it went out (its
	// endpoint could not be reached: once, always) or when its route says
	// so and the destination's retry budget allows; its body must then be
	// kept.
	replayable := r.Body == nil || r.Body == http.NoBody
	if !replayable && rt.retry != nil && r.ContentLength >= 0 && r.ContentLength <= maxRetryBody {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRetryBody+1))
		if err == nil && int64(len(body)) == r.ContentLength {
			out.Body = io.NopCloser(bytes.NewReader(body))
			out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			replayable = true
		} else {
			out.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
		}
	}
	ci.entry.budget.request(start)

	var resp *http.Response
	var h *balance.Handle
	var err error
	connectRetries, retries := 1, 0
	for {
		h, err = b.lb.Pick()
		if err != nil {
			break
		}
		attempt := start
		if retries > 0 || connectRetries == 0 {
			attempt = time.Now()
		}
		resp, err = p.roundTripOutbound(ctx, out, h.Endpoint())
		if !replayable || ctx.Err() != nil {
			break
		}
		if err != nil && isConnectError(err) && connectRetries > 0 {
			// Nothing was sent: another endpoint may take it.
			connectRetries--
			h.ConnectFailed()
			h = nil
			if out, err = nextAttempt(out); err != nil {
				break
			}
			continue
		}
		if rt.retry == nil || retries >= rt.retry.attempts || (err == nil && !rt.retry.codes[resp.StatusCode]) {
			break
		}
		if !ci.entry.budget.withdraw(time.Now()) {
			p.m.retried(b.service, false)
			break
		}
		p.m.retried(b.service, true)
		retries++
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			h.Done(attempt, errUpstream)
		} else if isConnectError(err) {
			h.ConnectFailed()
		} else {
			h.Done(attempt, err)
		}
		h, resp = nil, nil
		if !sleepCtx(ctx, rt.retry.backoff) {
			err = ctx.Err()
			break
		}
		if out, err = nextAttempt(out); err != nil {
			break
		}
	}
	switch {
	case errors.Is(err, balance.ErrNoEndpoints):
		status, failure = http.StatusServiceUnavailable, err
		p.outboundLocal(st, rt, status, start, r, body)
		proxyError(w, grpc, status, codeUnavailable, b.name+" has no ready endpoints")
		return
	case err != nil:
		if h != nil {
			if isConnectError(err) {
				h.ConnectFailed()
			} else {
				h.Done(start, err)
			}
		}
		status, failure = http.StatusBadGateway, err
		if ctx.Err() == context.DeadlineExceeded {
			status = http.StatusGatewayTimeout
		} else if isConnectError(err) {
			status = http.StatusServiceUnavailable
		}
		p.outboundLocal(st, rt, status, start, r, body)
		p.log.Debug("forwarding a request", "destination", ci.dst.String(), "error", err)
		proxyError(w, grpc, status, codeForStatus(status), err.Error())
		return
	}
	ep := h.Endpoint()
	status, endpoint = resp.StatusCode, ep.Address
	n := p.m.outboundChildren(p.workload, b, ep.Identity)
	rt.responseHeaders.apply(resp.Header)
	wb.responseHeaders.apply(resp.Header)
	var respBytes int64
	respBytes, failure = copyResponse(w, resp)
	succeeded := responseOK(resp, failure)
	var failed error
	if !succeeded {
		failed = errUpstream
	}
	h.Done(start, failed)
	n.observe(resp.StatusCode, start)
	// The row is looked up now, not before the response's copy: a long
	// response (a stream) may outlive a row retired meanwhile.
	p.outboundRow(rt, b, ep).Observe(succeeded, time.Since(start), reqBytes(r, body), respBytes)
}

// grpcFailed says whether a gRPC response (read to its end) failed in a
// way that counts against its endpoint: UNKNOWN, DEADLINE_EXCEEDED,
// INTERNAL or UNAVAILABLE, in its trailers or, trailers-only, its headers.
func grpcFailed(resp *http.Response) bool {
	code := resp.Trailer.Get("Grpc-Status")
	if code == "" {
		code = resp.Header.Get("Grpc-Status")
	}
	switch code {
	case "2", "4", "13", "14":
		return true
	}
	return false
}

var errUpstream = errors.New("the response was a server error")

// nextAttempt is out again, with its body from the start.
func nextAttempt(out *http.Request) (*http.Request, error) {
	next := out.Clone(out.Context())
	if out.GetBody != nil {
		body, err := out.GetBody()
		if err != nil {
			return nil, err
		}
		next.Body = body
	}
	return next, nil
}

// sleepCtx waits d unless ctx ends first, and says whether it waited.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// roundTripOutbound sends out to ep: over the mesh's HTTP/2 in mutual TLS
// to a meshed endpoint, else in the app's own protocol.
func (p *Proxy) roundTripOutbound(ctx context.Context, out *http.Request, ep *controlplanev1.Endpoint) (*http.Response, error) {
	out.URL.Host = ep.Address
	out.URL.Scheme = "http" // the mesh's TLS is the dialer's, below the transport
	if ep.Identity != "" && p.id != nil {
		if out.ProtoMajor == 1 {
			out.Header.Set(headerOrigProto, out.Proto)
		}
		return p.meshT.RoundTrip(out.WithContext(context.WithValue(ctx, peerIDKey{}, ep.Identity)))
	}
	out.Header.Del(headerOrigProto)
	if out.ProtoMajor == 2 {
		return p.plainH2C.RoundTrip(out)
	}
	return p.plainH1.RoundTrip(out)
}

// isConnectError says whether err happened before anything of the request
// was sent: the endpoint could not be reached or its handshake failed.
func isConnectError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var he *handshakeError
	return errors.As(err, &he)
}
