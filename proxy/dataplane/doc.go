// Package dataplane is what the proxy does with a connection once the
// forwarder has accepted it and knows where it was going.
//
// Outbound (the app dials out): the destination is looked up in discovery.
// One the control plane does not know (outside the mesh) is relayed as it
// is. For a Service or pod it knows, the first bytes say whether the app
// speaks HTTP/1, HTTP/2 or something else. Opaque TCP goes to an endpoint
// picked by the balancer, inside mutual TLS when the endpoint is meshed.
// HTTP is served here request by request: the route table picks a backend,
// the balancer an endpoint, and the request travels to a meshed endpoint
// over a long-lived HTTP/2 connection in mutual TLS, whatever the app
// spoke; to an unmeshed one, in the app's own protocol.
//
// Inbound (a peer dials the pod): a TLS ClientHello offering the mesh's
// ALPN protocols is a peer proxy; the handshake checks its certificate, and
// the connection is served as HTTP/2 (requests passed to the app in the
// protocol the calling app spoke) or relayed as opaque TCP. Anything else
// is a plaintext client: in Permissive mode relayed to the app untouched,
// in Strict mode refused.
//
// The ALPN protocols are the mesh's own, so that an app's TLS, which offers
// "h2" or "http/1.1", is never mistaken for a peer proxy.
package dataplane
