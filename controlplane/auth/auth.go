package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/url"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/trellis-mesh/trellis/ca"
)

// Peer is a workload that proved its identity with a mesh certificate.
type Peer struct {
	// SPIFFEID is spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
	SPIFFEID       string
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// FromContext returns the caller of a gRPC handler when it presented a
// client certificate that the server verified, and that certificate names
// exactly one ServiceAccount SPIFFE ID. It returns false for a caller
// without a certificate (a proxy that has not got one yet may still call
// Certify), on a connection that is not TLS, and for a certificate whose
// URI SANs are not exactly one such ID: a handler that needs to know who
// calls must then refuse with codes.Unauthenticated.
func FromContext(ctx context.Context) (Peer, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return Peer{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return Peer{}, false
	}
	// VerifiedChains, not PeerCertificates: a client may send any
	// certificate, only a verified one says who it is.
	chains := info.State.VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return Peer{}, false
	}
	leaf := chains[0][0]
	if len(leaf.URIs) != 1 {
		return Peer{}, false
	}
	id := leaf.URIs[0].String()
	td, ns, sa, err := ca.ParseSPIFFEID(id)
	if err != nil {
		return Peer{}, false
	}
	return Peer{SPIFFEID: id, TrustDomain: td, Namespace: ns, ServiceAccount: sa}, true
}

// NewContext returns ctx as a gRPC handler would see it when called over
// TLS by a client whose verified certificate names spiffeID: for tests of
// handlers that call FromContext, without a TLS connection. It goes through
// the same path as a real connection, so FromContext parses spiffeID as it
// would parse a certificate's URI SAN.
func NewContext(ctx context.Context, spiffeID string) context.Context {
	var uris []*url.URL
	if u, err := url.Parse(spiffeID); err == nil {
		uris = []*url.URL{u}
	}
	leaf := &x509.Certificate{URIs: uris}
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{
		State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf}}},
	}})
}
