package dataplane

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"time"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/proxy/detect"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/identity"
	"github.com/trellis-mesh/trellis/proxy/report"
	"github.com/trellis-mesh/trellis/proxy/tracing"
)

// handshakeTimeout bounds a peer's TLS handshake.
const handshakeTimeout = 10 * time.Second

// Inbound is the inbound forwarder's Handler.
func (p *Proxy) Inbound(ctx context.Context, f *forward.Forwarder, c net.Conn, dst netip.AddrPort) {
	if p.id == nil {
		f.DialRelay(ctx, c, dst)
		return
	}
	hello, isTLS, c, err := detect.PeekClientHello(c, p.detectTimeout)
	if err != nil {
		p.log.Debug("reading the start of an inbound connection", "client", c.RemoteAddr().String(), "error", err)
		forward.Reset(c)
		return
	}
	if isTLS && (slices.Contains(hello.ALPN, ALPNHTTP2) || slices.Contains(hello.ALPN, ALPNTCP)) {
		p.inboundMesh(ctx, f, c, dst)
		return
	}
	if p.mtlsMode() == controlplanev1.MTLSMode_MTLS_MODE_STRICT {
		p.m.refused(reasonPlaintext)
		p.log.Debug("refusing a plaintext connection: the mesh's mTLS mode is Strict", "client", c.RemoteAddr().String(), "port", dst.Port())
		forward.Reset(c)
		return
	}
	// Permissive: a client outside the mesh (or the app's own TLS) reaches
	// the app untouched, if the pod's policies let unauthenticated callers.
	p.m.detected(inboundDir, detect.Opaque)
	if !p.authorizeTCP("", dst.Port()) {
		forward.Reset(c)
		return
	}
	start := time.Now()
	server, err := p.dialApp(ctx, "tcp", dst.String())
	if err != nil {
		f.ConnectFailed(c, dst, err)
		return
	}
	server, c = flushPeeked(c, server)
	if server == nil {
		forward.Reset(c)
		return
	}
	p.recordTCP(report.Key{Direction: controlplanev1.Direction_DIRECTION_INBOUND})
	f.Relay(ctx, c, server, dst, start)
}

// inboundMesh terminates a peer proxy's mutual TLS and serves what it
// carries.
func (p *Proxy) inboundMesh(ctx context.Context, f *forward.Forwarder, c net.Conn, dst netip.AddrPort) {
	start := time.Now()
	tc := tls.Server(c, p.serverTLS)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		p.m.tlsFailed(inboundDir)
		p.m.refused(reasonHandshake)
		p.log.Info("refusing a peer whose mutual TLS handshake failed", "client", c.RemoteAddr().String(), "error", err)
		forward.Reset(c)
		return
	}
	cs := tc.ConnectionState()
	peer, _ := identity.PeerID(cs)
	switch cs.NegotiatedProtocol {
	case ALPNHTTP2:
		p.m.detected(inboundDir, detect.HTTP2)
		p.inHTTP.serve(withConnInfo(ctx, &connInfo{dst: dst, peer: peer}), tc)
	case ALPNTCP:
		p.m.detected(inboundDir, detect.Opaque)
		if !p.authorizeTCP(peer, dst.Port()) {
			forward.Reset(c)
			return
		}
		server, err := p.dialApp(ctx, "tcp", dst.String())
		if err != nil {
			f.ConnectFailed(tc, dst, err)
			return
		}
		p.m.tcpOpened(inboundDir, peer, true)
		p.recordTCP(report.Key{Direction: controlplanev1.Direction_DIRECTION_INBOUND, PeerIdentity: peer, MTLS: true})
		f.Relay(ctx, tc, server, dst, start)
	default:
		_ = tc.Close()
	}
}

// serveInbound passes a peer proxy's request to the app, in the HTTP
// version the calling app spoke.
func (p *Proxy) serveInbound(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ci := connInfoFrom(r.Context())
	n := p.m.inboundChildren(ci.peer, p.workload)
	body := countBody(r)
	var (
		status  int
		failure error
	)
	if p.access != nil {
		defer func() {
			p.logRequest(inboundDir, r, start, status, ci.peer, ci.dst.String(), p.workload, 0, failure)
		}()
	}
	if !p.authorizeHTTP(w, r, ci.peer, ci.dst.Port()) {
		status = http.StatusForbidden
		n.observe(status, start)
		p.inboundRow(ci).Observe(true, time.Since(start), reqBytes(r, body), 0)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme = "http"
	out.URL.Host = ci.dst.String()
	out.Close = false
	orig := r.Header.Get(headerOrigProto)
	out.Header.Del(headerOrigProto)
	removeHopHeaders(out.Header)
	span := p.startSpan(r.Header, out.Header, tracing.KindServer, r.Method+" "+p.workload, start)
	defer func() {
		p.endSpan(span, status, "trellis.direction", inboundDir, "http.request.method", r.Method, "url.path", r.URL.Path,
			"trellis.source", workloadOf(ci.peer), "trellis.workload", p.workload, "server.port", itoa(uint32(ci.dst.Port())))
	}()
	var rt http.RoundTripper = p.appH2C
	if orig == "HTTP/1.1" || orig == "HTTP/1.0" {
		rt = p.appH1
	}
	resp, err := rt.RoundTrip(out)
	if err != nil {
		status, failure = http.StatusBadGateway, err
		if isConnectError(err) {
			status = http.StatusServiceUnavailable
		}
		n.observe(status, start)
		p.inboundRow(ci).Observe(false, time.Since(start), reqBytes(r, body), 0)
		p.log.Debug("passing a request to the app", "port", ci.dst.Port(), "error", err)
		proxyError(w, isGRPC(r), status, codeUnavailable, "the app did not answer on port "+itoa(uint32(ci.dst.Port()))+": "+err.Error())
		return
	}
	status = resp.StatusCode
	var respBytes int64
	respBytes, failure = copyResponse(w, resp)
	n.observe(resp.StatusCode, start)
	p.inboundRow(ci).Observe(responseOK(resp, failure), time.Since(start), reqBytes(r, body), respBytes)
}
