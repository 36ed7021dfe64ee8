// Package auth tells a gRPC handler of the control plane which workload is
// calling: the SPIFFE identity of the mesh certificate the proxy presented
// on its TLS connection, once the server verified it against the mesh's
// roots.
//
// It only reads what the TLS handshake established; it must not verify
// certificates itself, so there is one place (the server's tls.Config) that
// decides what a verified client is.
package auth
