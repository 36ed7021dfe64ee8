package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/ca"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// Two proxies of different ServiceAccounts talk mutual TLS, each knows who
// the other is, and the second connection resumes the first's session.
func TestMutualTLS(t *testing.T) {
	cp := startControlPlane(t, time.Hour)
	a, b := cp.started(t, "a"), cp.started(t, "b")
	serverCfg := a.ServerTLS([]string{"trellis"})
	clientCfg := b.ClientTLS(a.ID(), []string{"trellis"})
	if again := b.ClientTLS(a.ID(), []string{"trellis"}); again != clientCfg {
		t.Error("ClientTLS made a second Config for the same identity and protocols")
	}

	// Sessions are cached by address: both connections go to one.
	l := listen(t, serverCfg)
	for i, wantResumed := range []bool{false, true} {
		cli := l.dial(t, clientCfg)
		srv := <-l.served
		if srv.err != nil || cli.err != nil {
			t.Fatalf("connection %d: server %v, client %v", i, srv.err, cli.err)
		}
		if cli.state.DidResume != wantResumed {
			t.Errorf("connection %d: resumed %t, want %t", i, cli.state.DidResume, wantResumed)
		}
		if cli.state.NegotiatedProtocol != "trellis" {
			t.Errorf("connection %d: protocol %q, want trellis", i, cli.state.NegotiatedProtocol)
		}
		if cli.state.Version != tls.VersionTLS13 {
			t.Errorf("connection %d: TLS version %x, want 1.3", i, cli.state.Version)
		}
		if id, ok := PeerID(srv.state); !ok || id != b.ID() {
			t.Errorf("connection %d: server's PeerID = %q, %t, want %s", i, id, ok, b.ID())
		}
		if id, ok := PeerID(cli.state); !ok || id != a.ID() {
			t.Errorf("connection %d: client's PeerID = %q, %t, want %s", i, id, ok, a.ID())
		}
	}

	// The same server certificate, reached by a client that verified
	// nothing, has no PeerID: only a verified connection does.
	blind := clientCfg.Clone()
	blind.VerifyConnection = nil
	blind.ClientSessionCache = nil
	cli := l.dial(t, blind)
	if cli.err != nil {
		t.Fatal(cli.err)
	}
	if id, ok := PeerID(cli.state); ok {
		t.Errorf("PeerID of an unverified connection = %q, want none", id)
	}
}

// What ClientTLS refuses, with the error a proxy's log would show.
func TestClientRefusesServer(t *testing.T) {
	cp := startControlPlane(t, time.Hour)
	a, c := cp.started(t, "a"), cp.started(t, "c")
	foreign := newTestCA(t)
	want := spiffeID("b")
	cases := map[string]struct {
		server  *tls.Config
		want    string // the identity asked for
		wantErr string
	}{
		"another identity": {
			server:  c.ServerTLS(nil),
			want:    want,
			wantErr: "server presented identity " + spiffeID("c") + ", want " + want,
		},
		"foreign CA": {
			server:  peerServer(foreign.workload(t, want, time.Now(), time.Hour)),
			want:    want,
			wantErr: "certificate signed by unknown authority",
		},
		"expired": {
			server:  peerServer(cp.ca.workload(t, want, time.Now().Add(-2*time.Hour), time.Hour)),
			want:    want,
			wantErr: "expired",
		},
		"client auth only": {
			server:  peerServer(cp.ca.crafted(t, nil, []string{want}, x509.ExtKeyUsageClientAuth)),
			want:    want,
			wantErr: "incompatible key usage",
		},
		"two identities": {
			server:  peerServer(cp.ca.crafted(t, nil, []string{want, spiffeID("c")}, x509.ExtKeyUsageServerAuth)),
			want:    want,
			wantErr: "server presented 2 URI SANs",
		},
		"not a SPIFFE ID": {
			server:  c.ServerTLS(nil),
			want:    "b.default.svc",
			wantErr: `want server identity "b.default.svc", which is not a workload SPIFFE ID`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, cli := handshake(t, tc.server, a.ClientTLS(tc.want, nil))
			if cli.err == nil || !strings.Contains(cli.err.Error(), tc.wantErr) {
				t.Errorf("client: %v, want an error containing %q", cli.err, tc.wantErr)
			}
		})
	}
}

// What ServerTLS refuses, with the error the server's handshake returns.
func TestServerRefusesClient(t *testing.T) {
	cp := startControlPlane(t, time.Hour)
	a := cp.started(t, "a")
	foreign := newTestCA(t)
	peer := spiffeID("peer")
	cases := map[string]struct {
		cert    *tls.Certificate
		wantErr string // "" when accepted
	}{
		"mesh workload": {cert: cp.ca.workload(t, peer, time.Now(), time.Hour)},
		"foreign CA": {
			cert:    foreign.workload(t, peer, time.Now(), time.Hour),
			wantErr: "certificate signed by unknown authority",
		},
		"expired": {
			cert:    cp.ca.workload(t, peer, time.Now().Add(-2*time.Hour), time.Hour),
			wantErr: "expired",
		},
		"another trust domain": {
			cert:    cp.ca.crafted(t, nil, []string{"spiffe://other.local/ns/default/sa/peer"}, x509.ExtKeyUsageClientAuth),
			wantErr: `is for trust domain "other.local", not this mesh's "cluster.local"`,
		},
		"two identities": {
			cert:    cp.ca.crafted(t, nil, []string{peer, spiffeID("admin")}, x509.ExtKeyUsageClientAuth),
			wantErr: "certificate has 2 URI SANs",
		},
		"no identity": {
			cert:    cp.ca.crafted(t, nil, nil, x509.ExtKeyUsageClientAuth),
			wantErr: "certificate has 0 URI SANs",
		},
		"not a workload ID": {
			cert:    cp.ca.crafted(t, nil, []string{"spiffe://cluster.local/admin"}, x509.ExtKeyUsageClientAuth),
			wantErr: "does not name a ServiceAccount",
		},
		"server auth only": {
			cert:    cp.ca.crafted(t, nil, []string{peer}, x509.ExtKeyUsageServerAuth),
			wantErr: "incompatible key usage",
		},
		"no certificate": {wantErr: "client didn't provide a certificate"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			srv, cli := handshake(t, a.ServerTLS(nil), peerClient(tc.cert))
			if tc.wantErr == "" {
				if srv.err != nil || cli.err != nil {
					t.Fatalf("server %v, client %v; want accepted", srv.err, cli.err)
				}
				if id, ok := PeerID(srv.state); !ok || id != peer {
					t.Errorf("PeerID = %q, %t, want %s", id, ok, peer)
				}
				return
			}
			if srv.err == nil || !strings.Contains(srv.err.Error(), tc.wantErr) {
				t.Errorf("server: %v, want an error containing %q", srv.err, tc.wantErr)
			}
			if cli.err == nil {
				t.Error("the client's connection works though the server refused it")
			}
		})
	}
}

// A new root added to the trust bundle file is trusted without a restart,
// the old one still is while it is in the file, and a malformed file
// changes nothing.
func TestTrustBundleRotation(t *testing.T) {
	cp := startControlPlane(t, time.Hour)
	a := cp.manager(t, "a", cp.token("a"), func(o *Options) { o.TrustBundlePoll = 20 * time.Millisecond })
	run(t, a.Manager)
	waitReady(t, a.Manager)

	next := newTestCA(t)
	oldPeer := cp.ca.workload(t, spiffeID("old"), time.Now(), time.Hour)
	newPeer := next.workload(t, spiffeID("new"), time.Now(), time.Hour)
	accepts := func(peer *tls.Certificate) bool {
		srv, _ := handshake(t, a.ServerTLS(nil), peerClient(peer))
		return srv.err == nil
	}
	if !accepts(oldPeer) {
		t.Fatal("a peer of the current root is refused")
	}
	if accepts(newPeer) {
		t.Fatal("a peer of a root not in the trust bundle is accepted")
	}
	clientCfg := a.ClientTLS(spiffeID("new"), nil)
	if _, cli := handshake(t, peerServer(newPeer), clientCfg); cli.err == nil {
		t.Fatal("ClientTLS accepts a server of a root not in the trust bundle")
	}

	writeFile(t, a.bundleFile, ca.EncodeCertificates(cp.ca.root.Cert, next.root.Cert))
	eventually(t, 5*time.Second, "the new root is not trusted", func() bool { return accepts(newPeer) })
	if !accepts(oldPeer) {
		t.Error("the old root, still in the file, is no longer trusted")
	}
	if _, cli := handshake(t, peerServer(newPeer), clientCfg); cli.err != nil {
		t.Errorf("ClientTLS refuses a server of the new root: %v", cli.err)
	}
	if got := metric(t, a.reg, "trellis_proxy_trust_bundle_roots"); got != 2 {
		t.Errorf("trust bundle roots = %v, want 2", got)
	}

	writeFile(t, a.bundleFile, []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n"))
	eventually(t, 5*time.Second, "the malformed bundle is not logged", func() bool {
		return a.log.count("the trust bundle is malformed") > 0
	})
	time.Sleep(100 * time.Millisecond) // a few more polls of the same content
	if n := a.log.count("the trust bundle is malformed"); n != 1 {
		t.Errorf("the malformed bundle is logged %d times, want once", n)
	}
	if !accepts(newPeer) || !accepts(oldPeer) {
		t.Error("a malformed trust bundle file dropped the roots held")
	}
	if got := metric(t, a.reg, "trellis_proxy_trust_bundle_roots"); got != 2 {
		t.Errorf("trust bundle roots = %v after a malformed file, want 2", got)
	}
}

// A file missing at start is not fatal: handshakes say why they fail, and
// the roots are picked up when the file appears.
func TestTrustBundleLate(t *testing.T) {
	cp := startControlPlane(t, time.Hour)
	a := cp.manager(t, "a", cp.token("a"), func(o *Options) {
		o.TrustBundleFile += ".missing"
		o.TrustBundlePoll = 20 * time.Millisecond
	})
	if !strings.Contains(a.log.String(), "no such file") {
		t.Errorf("a missing trust bundle is not logged:\n%s", a.log)
	}
	_, err := cp.dial(t, a.ControlPlaneTLS(cpName)).Certify(context.Background(), &controlplanev1.CertifyRequest{})
	if err == nil || !strings.Contains(err.Error(), "no roots held") {
		t.Errorf("Certify without roots: %v, want an error saying no roots are held", err)
	}
	run(t, a.Manager)
	writeFile(t, a.bundleFile+".missing", ca.EncodeCertificates(cp.ca.root.Cert))
	waitReady(t, a.Manager)
}

func TestControlPlaneTLS(t *testing.T) {
	cp := startControlPlane(t, time.Hour)
	a := cp.started(t, "a")
	if got := cp.lastCaller(); got != "" {
		t.Errorf("the first Certify came from %q, want no client certificate", got)
	}

	// Once it has one, the proxy presents its certificate to the control
	// plane.
	req := &controlplanev1.CertifyRequest{Csr: a.csr, Token: cp.token("a")}
	if _, err := cp.dial(t, a.ControlPlaneTLS(cpName)).Certify(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if got := cp.lastCaller(); got != a.ID() {
		t.Errorf("Certify came from %q, want %s", got, a.ID())
	}

	for name, tc := range map[string]struct {
		serverName string
		wantErr    string
	}{
		"another name": {"evil.example", "not evil.example"},
		"no name":      {"", "ControlPlaneTLS was given no server name"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := cp.dial(t, a.ControlPlaneTLS(tc.serverName)).Certify(context.Background(), req)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Certify: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
