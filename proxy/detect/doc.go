// Package detect reads the first bytes of an accepted connection to tell
// what it speaks: the HTTP/2 client preface, an HTTP/1 request line, or
// neither (opaque TCP); or, for TLS, the server name and ALPN protocols of
// its ClientHello. It decides as soon as the bytes allow and gives the
// connection back with those bytes still to be read, so the layer that
// handles the protocol, or a plain relay, sees the connection whole.
//
// It only reads. It must not write to the connection, close it or keep its
// read deadline: a connection it cannot classify is opaque and is relayed
// as it is, never refused, so a guess it gets wrong costs features, not
// traffic.
package detect
