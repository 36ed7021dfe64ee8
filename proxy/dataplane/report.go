package dataplane

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/proxy/report"
)

// The report rows of a request are resolved once per route and endpoint
// (outbound) or per connection (inbound) and cached there, so that a
// request only adds to atomic counters; a row the Recorder retired is
// resolved again.

// routeRef is <namespace>/<name> of a compiled route's name
// (<namespace>/<name>/<rule index>); "" for the fallback.
func routeRef(name string) string {
	i := strings.IndexByte(name, '/')
	if i < 0 {
		return ""
	}
	if j := strings.IndexByte(name[i+1:], '/'); j >= 0 {
		return name[:i+1+j]
	}
	return name
}

// outboundRow is the report row of requests through rt to ep.
func (p *Proxy) outboundRow(rt *route, b *backend, ep *controlplanev1.Endpoint) *report.Row {
	if p.rec == nil {
		return nil
	}
	if v, ok := rt.rows.Load(ep); ok {
		if r := v.(*report.Row); r.Live() {
			return r
		}
	}
	r := p.rec.Row(report.Key{
		Direction:    controlplanev1.Direction_DIRECTION_OUTBOUND,
		PeerIdentity: ep.Identity,
		PeerPod:      ep.Pod,
		Service:      b.service,
		Route:        rt.ref,
		MTLS:         ep.Identity != "" && p.id != nil,
	})
	rt.rows.Store(ep, r)
	return r
}

// noEndpoint keys a route's row of the responses the proxy made itself.
var noEndpoint *controlplanev1.Endpoint

// recordLocal reports a response the proxy made itself to a request for
// st (through rt, when one matched): no route, no backend, no endpoint, a
// redirect, an overflow.
func (p *Proxy) recordLocal(st *outState, rt *route, status int, start time.Time, reqBytes int64) {
	if p.rec == nil {
		return
	}
	// st.service, not st.name cut at its port: for a pod dialed by its
	// address that would be the IP, which the control plane refuses as a
	// Service (with the whole report).
	svc := st.service
	var r *report.Row
	if rt != nil {
		if v, ok := rt.rows.Load(noEndpoint); ok && v.(*report.Row).Live() {
			r = v.(*report.Row)
		}
	}
	if r == nil {
		k := report.Key{Direction: controlplanev1.Direction_DIRECTION_OUTBOUND, Service: svc}
		if rt != nil {
			k.Route = rt.ref
		}
		r = p.rec.Row(k)
		if rt != nil {
			rt.rows.Store(noEndpoint, r)
		}
	}
	r.Observe(status < 500, time.Since(start), reqBytes, 0)
}

// inboundRow is the report row of requests from the peer of ci. A request
// looks it up as it ends, not as it starts: a long one (a stream) may
// outlive a row retired meanwhile.
func (p *Proxy) inboundRow(ci *connInfo) *report.Row {
	if p.rec == nil {
		return nil
	}
	if r := ci.row.Load(); r.Live() {
		return r
	}
	r := p.rec.Row(report.Key{Direction: controlplanev1.Direction_DIRECTION_INBOUND, PeerIdentity: ci.peer, MTLS: true})
	ci.row.Store(r)
	return r
}

// recordTCP reports an opaque connection.
func (p *Proxy) recordTCP(k report.Key) {
	p.rec.Row(k).Connection()
}

// countBody counts the bytes of r's body as they are read, when its length
// is not known in advance (a stream); reqBytes then says how many.
func countBody(r *http.Request) *bodyCounter {
	if r.ContentLength >= 0 || r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	c := &bodyCounter{ReadCloser: r.Body}
	r.Body = c
	return c
}

// reqBytes is the size of r's body: its Content-Length, or what c counted.
func reqBytes(r *http.Request, c *bodyCounter) int64 {
	if c != nil {
		return c.n.Load()
	}
	return max(r.ContentLength, 0)
}

type bodyCounter struct {
	io.ReadCloser
	// n is atomic: the transport may still read the body while the
	// handler returns.
	n atomic.Int64
}

func (c *bodyCounter) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// responseOK says whether a response the proxy passed on succeeded, as
// the control plane's success rate counts: below 500, read to its end,
// and for gRPC not UNKNOWN, DEADLINE_EXCEEDED, INTERNAL or UNAVAILABLE.
func responseOK(resp *http.Response, failure error) bool {
	return resp.StatusCode < 500 && failure == nil && !grpcFailed(resp)
}

// outboundLocal counts, in the metrics and the report, a response the
// proxy made itself.
func (p *Proxy) outboundLocal(st *outState, rt *route, status int, start time.Time, r *http.Request, body *bodyCounter) {
	p.m.outboundLocal(p.workload, st, status)
	p.recordLocal(st, rt, status, start, reqBytes(r, body))
}
