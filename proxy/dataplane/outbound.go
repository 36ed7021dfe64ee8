package dataplane

import (
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

// serveOutbound forwards one request of the app: route, backend, endpoint.
func (p *Proxy) serveOutbound(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ci := connInfoFrom(r.Context())
	st := ci.entry.current()
	grpc := isGRPC(r)

	rt, ok := st.route(r)
	if !ok {
		p.m.outboundLocal(p.workload, st, http.StatusNotFound)
		proxyError(w, grpc, http.StatusNotFound, codeUnimplemented, "no route of "+st.name+" matches the request")
		return
	}
	b := rt.pickBackend()
	if b == nil {
		p.m.outboundLocal(p.workload, st, http.StatusInternalServerError)
		proxyError(w, grpc, http.StatusInternalServerError, codeUnavailable, "route "+rt.name+" has no backend that can be sent to")
		return
	}
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

	var resp *http.Response
	var h *balance.Handle
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		h, err = b.lb.Pick()
		if err != nil {
			break
		}
		resp, err = p.roundTripOutbound(ctx, r, h.Endpoint(), b)
		if err == nil || !isConnectError(err) || r.Body != http.NoBody && r.Body != nil {
			break
		}
		// Nothing was sent: another endpoint may take it.
		h.ConnectFailed()
		h = nil
	}
	switch {
	case errors.Is(err, balance.ErrNoEndpoints):
		p.m.outboundLocal(p.workload, st, http.StatusServiceUnavailable)
		proxyError(w, grpc, http.StatusServiceUnavailable, codeUnavailable, b.name+" has no ready endpoints")
		return
	case err != nil:
		if h != nil {
			if isConnectError(err) {
				h.ConnectFailed()
			} else {
				h.Done(start, err)
			}
		}
		status := http.StatusBadGateway
		if ctx.Err() == context.DeadlineExceeded {
			status = http.StatusGatewayTimeout
		} else if isConnectError(err) {
			status = http.StatusServiceUnavailable
		}
		p.m.outboundLocal(p.workload, st, status)
		p.log.Debug("forwarding a request", "destination", ci.dst.String(), "error", err)
		proxyError(w, grpc, status, codeForStatus(status), err.Error())
		return
	}
	ep := h.Endpoint()
	n := p.m.outboundChildren(p.workload, b, ep.Identity)
	copyErr := copyResponse(w, resp)
	var failed error
	if resp.StatusCode >= 500 || copyErr != nil {
		failed = errUpstream
	}
	h.Done(start, failed)
	n.observe(resp.StatusCode, start)
}

var errUpstream = errors.New("the response was a server error")

// roundTripOutbound sends r to ep: over the mesh's HTTP/2 in mutual TLS to
// a meshed endpoint, else in the app's own protocol.
func (p *Proxy) roundTripOutbound(ctx context.Context, r *http.Request, ep *controlplanev1.Endpoint, b *backend) (*http.Response, error) {
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.URL.Host = ep.Address
	out.Close = false
	removeHopHeaders(out.Header)
	out.URL.Scheme = "http" // the mesh's TLS is the dialer's, below the transport
	if ep.Identity != "" && p.id != nil {
		if r.ProtoMajor == 1 {
			out.Header.Set(headerOrigProto, r.Proto)
		}
		out = out.WithContext(context.WithValue(ctx, peerIDKey{}, ep.Identity))
		return p.meshT.RoundTrip(out)
	}
	if r.ProtoMajor == 2 {
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
