// Package identity is the proxy's workload identity: an ECDSA P-256 key that
// never leaves the process, a certificate for the pod's ServiceAccount
// SPIFFE ID that the control plane signs (IdentityService.Certify, proven
// with the pod's projected token) and renews before it expires, and the
// mesh's trust bundle. From these it hands out the TLS configurations of
// mutual TLS between proxies and of the connection to the control plane.
//
// Every handshake uses the certificate and roots current at that moment,
// so renewals and trust bundle rotations need no restart and no caller
// has to rebuild a tls.Config.
//
// It must not write the key or the certificate anywhere, and it decides
// nothing about authorization: it says who a verified peer is (PeerID);
// whether that peer may talk to the app is another layer's call.
package identity
