// Package ca owns the certificate authority of a Trellis mesh: it creates and
// rotates the builtin root and issuer, accepts an issuer written by
// cert-manager instead, keeps an old root in the trust bundle until nothing it
// signed can still be valid, checks workload certificate requests against
// the mesh's policy, and signs workload certificates and the control plane's
// serving certificate.
//
// It is pure so that every CA decision can be tested exhaustively and replayed:
// it must not talk to Kubernetes, do any I/O, read the clock or use randomness
// other than crypto/rand. Whatever depends on time takes now; the caller
// decides what time it is and stores what this package returns.
package ca
