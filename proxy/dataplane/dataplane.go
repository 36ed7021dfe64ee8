package dataplane

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/ca"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/proxy/destinations"
	"github.com/trellis-mesh/trellis/proxy/identity"
	netredirect "github.com/trellis-mesh/trellis/proxy/redirect"
	"github.com/trellis-mesh/trellis/proxy/report"
	"github.com/trellis-mesh/trellis/proxy/tracing"
)

// The mesh's ALPN protocols between proxies.
const (
	// ALPNHTTP2 carries HTTP requests between proxies over HTTP/2,
	// whichever HTTP version the calling app spoke.
	ALPNHTTP2 = "trellis.dev/h2"
	// ALPNTCP carries one opaque TCP connection.
	ALPNTCP = "trellis.dev/tcp"
)

// headerOrigProto tells the server-side proxy which HTTP version the calling
// app spoke, so that it passes the request on in that version; it is
// removed before the request reaches the app.
const headerOrigProto = "trellis-orig-proto"

// headerProxyError names, on a response that the proxy made itself, why.
const headerProxyError = "trellis-proxy-error"

// Options configure a Proxy.
type Options struct {
	// Identity holds the pod's certificate, for mutual TLS with peer
	// proxies. Without it, the proxy relays every connection as it is.
	Identity *identity.Manager
	// Destinations answers what a destination is. Without it, every
	// outbound connection is relayed as it is.
	Destinations *destinations.Client
	// MTLSMode is the mode until the control plane says: Strict refuses
	// plaintext inbound connections; anything else accepts them.
	MTLSMode controlplanev1.MTLSMode
	// Workload is the pod's own workload for metrics: "<namespace>/<service account>".
	Workload string
	// DetectTimeout bounds how long the proxy waits for a client's first
	// bytes to tell its protocol; a client that says nothing first is
	// taken as opaque TCP. 1s when zero.
	DetectTimeout time.Duration
	// ConnectTimeout bounds a connection to an endpoint, TLS handshake
	// included, when no TrafficPolicy sets one. 10s when zero.
	ConnectTimeout time.Duration
	// OpaquePorts are destination ports whose servers speak first (such as
	// MySQL's): their connections skip protocol detection.
	OpaquePorts []uint16
	Metrics     *Metrics
	Log         *slog.Logger
	// AccessLog gets one line per HTTP request, when set.
	AccessLog *slog.Logger
	// Tracer exports a span per sampled HTTP request, when set.
	Tracer *tracing.Exporter
	// Report, when set, gets every request and opaque connection, for the
	// control plane's traffic report.
	Report *report.Recorder
}

// Proxy handles the forwarders' connections; see the package comment.
type Proxy struct {
	id            *identity.Manager
	dests         *destinations.Client
	inbound       atomic.Pointer[destinations.InboundState]
	defaultMode   controlplanev1.MTLSMode
	workload      string
	detectTimeout time.Duration
	connTimeout   time.Duration
	opaque        map[uint16]bool
	m             *Metrics
	log           *slog.Logger
	access        *slog.Logger
	tracer        *tracing.Exporter
	rec           *report.Recorder
	dialer        net.Dialer

	// Outbound: destinations' compiled state, by destination.
	outMu sync.Mutex
	out   map[string]*outEntry

	// HTTP servers for the connections this proxy serves request by request.
	outHTTP *connServer // the app's: HTTP/1, or HTTP/2 with prior knowledge
	inHTTP  *connServer // peer proxies': HTTP/2 inside mutual TLS

	// Transports.
	meshT    *http.Transport // to peer proxies: HTTP/2 in mutual TLS
	plainH1  *http.Transport // to unmeshed endpoints, HTTP/1
	plainH2C *http.Transport // to unmeshed endpoints, HTTP/2 without TLS
	appH1    *http.Transport // to the app (inbound), HTTP/1
	appH2C   *http.Transport // to the app (inbound), HTTP/2 without TLS

	serverTLS *tls.Config
	authz     *authorizer
}

// New returns a Proxy; Run sweeps its idle state and Shutdown drains it.
func New(o Options) *Proxy {
	p := &Proxy{
		id:            o.Identity,
		dests:         o.Destinations,
		defaultMode:   o.MTLSMode,
		workload:      o.Workload,
		detectTimeout: o.DetectTimeout,
		connTimeout:   o.ConnectTimeout,
		opaque:        map[uint16]bool{},
		m:             o.Metrics,
		log:           o.Log,
		access:        o.AccessLog,
		tracer:        o.Tracer,
		rec:           o.Report,
		out:           map[string]*outEntry{},
	}
	if p.detectTimeout <= 0 {
		p.detectTimeout = time.Second
	}
	if p.connTimeout <= 0 {
		p.connTimeout = 10 * time.Second
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.m == nil {
		p.m = NewMetrics(nil)
	}
	for _, port := range o.OpaquePorts {
		p.opaque[port] = true
	}
	p.dialer = net.Dialer{KeepAlive: 30 * time.Second}

	p.outHTTP = newConnServer(http.HandlerFunc(p.serveOutbound), protocols(true, true), p.log)
	p.inHTTP = newConnServer(http.HandlerFunc(p.serveInbound), protocols(false, true), p.log)

	// HTTP/2 connections are pinged when idle, so that a peer that vanished
	// is noticed before a request waits on it.
	pings := &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 10 * time.Second}
	plain := func(dial func(context.Context, string, string) (net.Conn, error)) (h1, h2c *http.Transport) {
		h1 = &http.Transport{
			DialContext:         dial,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		}
		h2c = &http.Transport{
			Protocols:          protocols(false, true),
			DialContext:        dial,
			IdleConnTimeout:    90 * time.Second,
			DisableCompression: true,
			HTTP2:              pings,
		}
		return h1, h2c
	}
	p.plainH1, p.plainH2C = plain(p.dialPlain)
	p.appH1, p.appH2C = plain(p.dialApp)
	// To a peer proxy: the mesh's mutual TLS is made by the dialer, so the
	// transport sees a plain connection and speaks HTTP/2 with prior
	// knowledge over it.
	p.meshT = &http.Transport{
		Protocols:          protocols(false, true),
		DialContext:        p.dialMeshH2,
		IdleConnTimeout:    10 * time.Minute,
		DisableCompression: true,
		HTTP2:              pings,
	}
	p.authz = &authorizer{}
	if p.id != nil {
		p.serverTLS = p.id.ServerTLS([]string{ALPNHTTP2, ALPNTCP})
		p.authz.trustDomain, _, _, _ = ca.ParseSPIFFEID(p.id.ID())
	}
	return p
}

// Run forgets the outbound state of destinations the app stopped using,
// until ctx ends.
func (p *Proxy) Run(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.sweep(time.Now().Add(-outIdle))
		}
	}
}

// Shutdown stops serving new requests on the connections it serves: idle
// HTTP/1 connections close, HTTP/2 ones get a GOAWAY; requests in flight
// finish. It returns when the HTTP/1 connections are done or ctx ends; the
// forwarders wait for the rest.
func (p *Proxy) Shutdown(ctx context.Context) error {
	err := errors.Join(p.outHTTP.shutdown(ctx), p.inHTTP.shutdown(ctx))
	p.plainH1.CloseIdleConnections()
	p.plainH2C.CloseIdleConnections()
	p.appH1.CloseIdleConnections()
	p.appH2C.CloseIdleConnections()
	p.meshT.CloseIdleConnections()
	return err
}

// protocols are the HTTP versions a server or transport speaks, none over
// TLS of net/http's own: the mesh's TLS is the proxy's.
func protocols(http1, h2c bool) *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(http1)
	p.SetUnencryptedHTTP2(h2c)
	return &p
}

// SetInbound gives the proxy its pod's inbound state, once it can watch it
// (it needs the proxy's certificate): its mTLS mode replaces
// Options.MTLSMode from its first answer on.
func (p *Proxy) SetInbound(s *destinations.InboundState) { p.inbound.Store(s) }

// mtlsMode is the pod's mTLS mode now.
func (p *Proxy) mtlsMode() controlplanev1.MTLSMode {
	if in := p.inbound.Load(); in != nil {
		if st := in.Load(); st != nil && st.MtlsMode != controlplanev1.MTLSMode_MTLS_MODE_UNSPECIFIED {
			return st.MtlsMode
		}
	}
	return p.defaultMode
}

// meshReady says whether the proxy can take part in the mesh: it holds a
// certificate. Before, discovery's connection would be made without one
// and refused, so connections are relayed as they are.
func (p *Proxy) meshReady() bool {
	if p.id == nil {
		return false
	}
	select {
	case <-p.id.Ready():
		return true
	default:
		return false
	}
}

// dialPlain connects without TLS.
func (p *Proxy) dialPlain(ctx context.Context, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.connTimeout)
	defer cancel()
	return p.dialer.DialContext(ctx, network, addr)
}

// dialApp connects to the app, the inbound connection's original
// destination, as redirect.DialApp says.
func (p *Proxy) dialApp(ctx context.Context, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.connTimeout)
	defer cancel()
	return netredirect.DialApp(ctx, p.dialer, network, addr)
}

// dialMesh connects to a peer proxy at addr in mutual TLS with one ALPN
// protocol, checking that it holds identity id.
func (p *Proxy) dialMesh(ctx context.Context, addr, id, alpn string, timeout time.Duration) (*tls.Conn, error) {
	if timeout <= 0 {
		timeout = p.connTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	raw, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, p.id.ClientTLS(id, []string{alpn}))
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		p.m.tlsFailed(outboundDir)
		return nil, &handshakeError{addr: addr, err: err}
	}
	return tc, nil
}

// handshakeError is a failed TLS handshake with a peer proxy.
type handshakeError struct {
	addr string
	err  error
}

func (e *handshakeError) Error() string { return "mutual TLS with " + e.addr + ": " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

type peerIDKey struct{}

// dialMeshH2 is meshT's dialer: the expected identity travels in the
// request's context.
func (p *Proxy) dialMeshH2(ctx context.Context, _, addr string) (net.Conn, error) {
	id, _ := ctx.Value(peerIDKey{}).(string)
	if id == "" {
		return nil, errors.New("no peer identity for " + addr)
	}
	return p.dialMesh(ctx, addr, id, ALPNHTTP2, 0)
}
