// Package destinations is the proxy's client of the control plane's
// DiscoveryService: it learns, on demand as Linkerd does, what each
// destination the app dials is (Outbound), and what its own pod accepts
// (Inbound), and keeps a stream open for each so that it always holds the
// latest answer.
//
// Each stream carries the whole state first, then a whole new state on
// every change; an answer replaces the one before, and one that equals it
// is dropped. The control plane may go away (a rollout, an outage): the
// proxy keeps serving with the last answer it got while the stream
// reconnects with backoff, and the new stream's first answer replaces the
// state. A destination that the proxy stops using is unwatched and
// forgotten, so memory follows what the app uses, not the size of the
// cluster or the age of the proxy.
//
// The package owns the streams and the state, nothing else: it does not
// dial, balance or route, and it does not own the grpc.ClientConn. The
// caller sets the conn's TLS, keepalive (so that a control plane that
// vanishes without closing the connection is noticed) and connect backoff
// (which bounds how soon a restored control plane is reached, whatever
// this package's own backoff says).
package destinations
