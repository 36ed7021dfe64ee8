package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"testing"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// plaintext is the AuthInfo of a connection without TLS.
type plaintext struct{}

func (plaintext) AuthType() string { return "insecure" }

func tlsPeer(state tls.ConnectionState) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: state}})
}

func certWithURIs(t *testing.T, uris ...string) *x509.Certificate {
	t.Helper()
	c := &x509.Certificate{}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		c.URIs = append(c.URIs, u)
	}
	return c
}

func TestFromContext(t *testing.T) {
	const id = "spiffe://cluster.local/ns/shop/sa/web"
	web := certWithURIs(t, id)
	tests := map[string]struct {
		ctx  context.Context
		want Peer
		ok   bool
	}{
		"verified mesh certificate": {
			ctx:  tlsPeer(tls.ConnectionState{PeerCertificates: []*x509.Certificate{web}, VerifiedChains: [][]*x509.Certificate{{web}}}),
			want: Peer{SPIFFEID: id, TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "web"},
			ok:   true,
		},
		"NewContext goes the same way": {
			ctx:  NewContext(context.Background(), id),
			want: Peer{SPIFFEID: id, TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "web"},
			ok:   true,
		},
		"no peer":               {ctx: context.Background()},
		"not TLS":               {ctx: peer.NewContext(context.Background(), &peer.Peer{AuthInfo: plaintext{}})},
		"no client certificate": {ctx: tlsPeer(tls.ConnectionState{})},
		// A certificate the server did not verify says nothing.
		"presented but not verified": {ctx: tlsPeer(tls.ConnectionState{PeerCertificates: []*x509.Certificate{web}})},
		"two URIs": {ctx: tlsPeer(tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{
			certWithURIs(t, id, "spiffe://cluster.local/ns/kube-system/sa/admin")}}})},
		"no URI":                  {ctx: tlsPeer(tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{certWithURIs(t)}}})},
		"not a ServiceAccount ID": {ctx: NewContext(context.Background(), "spiffe://cluster.local/controlplane")},
		"not SPIFFE":              {ctx: NewContext(context.Background(), "https://cluster.local/ns/shop/sa/web")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := FromContext(tc.ctx)
			if ok != tc.ok || got != tc.want {
				t.Errorf("got %+v, %t; want %+v, %t", got, ok, tc.want, tc.ok)
			}
		})
	}
}
