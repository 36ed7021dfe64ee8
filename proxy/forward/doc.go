// Package forward relays the TCP connections that trellis-init's rules
// redirect to the proxy's outbound and inbound ports: it reads where each
// connection was going (SO_ORIGINAL_DST), connects there, and copies bytes
// both ways until both sides are done, counting them.
//
// A Forwarder knows nothing about routing or TLS: it asks its Dial function
// for a connection to the destination, which is where discovery, load
// balancing and mTLS slot in. Between two plain TCP connections the copy
// splices, so payload bytes never enter user space.
//
// It must never forward a connection back to the proxy itself: one that
// was not redirected (someone connected to the proxy's port directly) is
// closed, not relayed to itself.
package forward
