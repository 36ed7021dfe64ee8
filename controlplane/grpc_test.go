package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/ca"
	"github.com/trellis-mesh/trellis/controlplane/auth"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// whoAmI stands for a service that needs to know its caller, as Discovery
// does: it answers with the caller's identity in the header, or
// Unauthenticated.
type whoAmI struct {
	healthpb.UnimplementedHealthServer
}

func (whoAmI) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	p, ok := auth.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "call with a mesh certificate")
	}
	if err := grpc.SetHeader(ctx, metadata.Pairs("spiffe-id", p.SPIFFEID, "namespace", p.Namespace, "service-account", p.ServiceAccount)); err != nil {
		return nil, err
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// Watch stands for a Discovery stream: it runs until the client or the
// server ends it.
func (whoAmI) Watch(_ *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	if err := stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return stream.Context().Err()
}

func registerWhoAmI(gs *grpc.Server) { healthpb.RegisterHealthServer(gs, whoAmI{}) }

// whoAmI asks the harness who cc's client is.
func askWhoAmI(t *testing.T, cc *grpc.ClientConn) (metadata.MD, error) {
	t.Helper()
	var md metadata.MD
	_, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.Header(&md))
	return md, err
}

// certify gets w a certificate from h and returns it as a TLS client
// certificate.
func certify(t *testing.T, h *harness, w *workload) (*tls.Certificate, *controlplanev1.CertifyResponse) {
	t.Helper()
	resp, err := h.identity(t).Certify(context.Background(), &controlplanev1.CertifyRequest{Csr: w.csr, Token: w.token(t, TokenAudience)})
	if err != nil {
		t.Fatal(err)
	}
	return tlsCertificate(w.key, resp), resp
}

// serverChain is the certificate chain h presents on a new connection.
func serverChain(t *testing.T, h *harness, roots *x509.CertPool) []*x509.Certificate {
	t.Helper()
	var p peer.Peer
	_, err := controlplanev1.NewIdentityServiceClient(h.dial(t, roots, nil)).Certify(context.Background(), &controlplanev1.CertifyRequest{}, grpc.Peer(&p))
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("empty Certify: %v, want Unauthenticated", err)
	}
	return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates
}

func TestServingCertificate(t *testing.T) {
	h := startHarness(t, harnessOptions{})
	chain := serverChain(t, h, nil)
	leaf := chain[0]
	want := []string{"trellis-controlplane", "trellis-controlplane.trellis-system", "trellis-controlplane.trellis-system.svc",
		"trellis-controlplane.trellis-system.svc.cluster.local"}
	if !slices.Equal(leaf.DNSNames, want) {
		t.Errorf("DNS names %v, want %v", leaf.DNSNames, want)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > servingCertTTL+ca.ClockSkew {
		t.Errorf("serving certificate lives %v, want at most %v", life, servingCertTTL)
	}
	if !chain[1].Equal(h.ca.issuer.Cert) {
		t.Error("the serving certificate is not signed by the mesh's issuer")
	}
	// A proxy may use any of the names.
	for _, name := range want {
		tc := &tls.Config{RootCAs: h.ca.pool(), ServerName: name, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13}
		conn, err := tls.Dial("tcp", h.addr, tc)
		if err != nil {
			t.Errorf("TLS for %s: %v", name, err)
			continue
		}
		_ = conn.Close()
	}
	// A client that trusts another CA refuses it.
	other := newTestCA(t, 0)
	_, err := controlplanev1.NewIdentityServiceClient(h.dial(t, other.pool(), nil)).Certify(context.Background(), &controlplanev1.CertifyRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("a client trusting another root got %v, want a failed connection", err)
	}

	t.Run("renewed at two thirds of its life", func(t *testing.T) {
		// Asked directly: a client with a real clock would reject a
		// certificate from the server's future.
		h.clock.Advance(servingCertTTL / 2)
		if same, err := h.srv.getCertificate(nil); err != nil || !same.Leaf.Equal(leaf) {
			t.Errorf("renewed at half life (%v)", err)
		}
		h.clock.Advance(servingCertTTL / 4)
		renewed, err := h.srv.getCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		if renewed.Leaf.Equal(leaf) || !renewed.Leaf.NotAfter.After(leaf.NotAfter) {
			t.Errorf("still serving the certificate valid until %v", leaf.NotAfter)
		}
	})
}

func TestPeerIdentity(t *testing.T) {
	h := startHarness(t, harnessOptions{register: registerWhoAmI})
	ns := newNamespace(t)
	web := newWorkload(t, ns, "web")
	cert, _ := certify(t, h, web)

	t.Run("a client with a mesh certificate is its ServiceAccount", func(t *testing.T) {
		md, err := askWhoAmI(t, h.dial(t, nil, cert))
		if err != nil {
			t.Fatal(err)
		}
		if got := md.Get("spiffe-id"); len(got) != 1 || got[0] != web.id {
			t.Errorf("spiffe-id %v, want %s", got, web.id)
		}
		if ns2, sa := md.Get("namespace"), md.Get("service-account"); len(ns2) != 1 || ns2[0] != ns || len(sa) != 1 || sa[0] != "web" {
			t.Errorf("namespace %v, service account %v", ns2, sa)
		}
	})

	t.Run("a client without a certificate is nobody, but may Certify", func(t *testing.T) {
		cc := h.dial(t, nil, nil)
		_, err := askWhoAmI(t, cc)
		checkStatus(t, err, codes.Unauthenticated, "call with a mesh certificate")
		if _, err := controlplanev1.NewIdentityServiceClient(cc).Certify(context.Background(),
			&controlplanev1.CertifyRequest{Csr: web.csr, Token: web.token(t, TokenAudience)}); err != nil {
			t.Errorf("Certify without a client certificate: %v", err)
		}
	})

	t.Run("a certificate from another CA is refused in the handshake", func(t *testing.T) {
		other := newTestCA(t, 0)
		leaf, err := ca.SignWorkloadKey(other.issuer, web.key.Public(), web.id, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		forged := &tls.Certificate{Certificate: [][]byte{leaf.Raw, other.issuer.Cert.Raw}, PrivateKey: web.key}
		if _, err := askWhoAmI(t, h.dial(t, nil, forged)); status.Code(err) != codes.Unavailable {
			t.Errorf("got %v, want the connection refused", err)
		}
	})

	t.Run("a mesh-signed certificate for another trust domain is refused in the handshake", func(t *testing.T) {
		tmpl := &x509.Certificate{
			SerialNumber: leafSerial(t), URIs: urls(t, "spiffe://other.example/ns/"+ns+"/sa/web"),
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, h.ca.issuer.Cert, web.key.Public(), h.ca.issuer.Key)
		if err != nil {
			t.Fatal(err)
		}
		foreign := &tls.Certificate{Certificate: [][]byte{der, h.ca.issuer.Cert.Raw}, PrivateKey: web.key}
		if _, err := askWhoAmI(t, h.dial(t, nil, foreign)); status.Code(err) != codes.Unavailable {
			t.Errorf("got %v, want the connection refused", err)
		}
	})
}

func leafSerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}

func TestSignerRotation(t *testing.T) {
	first := newTestCA(t, 0)
	h := startHarness(t, harnessOptions{ca: &first, register: registerWhoAmI})
	ns := newNamespace(t)
	web := newWorkload(t, ns, "web")
	oldCert, resp := certify(t, h, web)
	if _, chains := verifyLeaf(t, resp, web.id); !chains[0][1].Equal(first.issuer.Cert) {
		t.Fatal("the first certificate is not from the first issuer")
	}

	t.Run("a new intermediate signs new certificates, and the server's", func(t *testing.T) {
		second := testCA{root: first.root, issuer: newIssuer(t, first.root, 0)}
		second.writeTo(t, h.dir)
		if err := h.srv.LoadSigner(); err != nil {
			t.Fatal(err)
		}
		_, resp := certify(t, h, web)
		if _, chains := verifyLeaf(t, resp, web.id); !chains[0][1].Equal(second.issuer.Cert) {
			t.Error("a certificate signed after the rotation does not chain to the new intermediate")
		}
		if chain := serverChain(t, h, nil); !chain[1].Equal(second.issuer.Cert) {
			t.Error("the serving certificate was not renewed with the new intermediate")
		}
		// A certificate from the old intermediate, same root, still works.
		if _, err := askWhoAmI(t, h.dial(t, nil, oldCert)); err != nil {
			t.Errorf("a client with a certificate from the previous intermediate: %v", err)
		}
	})

	t.Run("a new root: old and new roots are trusted while the bundle holds both", func(t *testing.T) {
		third := newTestCA(t, 0)
		third.writeTo(t, h.dir)
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: trustBundleConfigMap, Namespace: testNamespace},
			Data:       map[string]string{trustBundleKey: string(ca.EncodeCertificates(third.root.Cert, first.root.Cert))},
		}
		if _, err := kube.CoreV1().ConfigMaps(testNamespace).Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = kube.CoreV1().ConfigMaps(testNamespace).Delete(context.Background(), trustBundleConfigMap, metav1.DeleteOptions{})
		})
		if err := h.srv.LoadSigner(); err != nil {
			t.Fatal(err)
		}
		if err := h.srv.LoadTrustBundle(context.Background()); err != nil {
			t.Fatal(err)
		}
		cert, resp := certify(t, h.withRoots(third), web)
		_, chains := verifyLeaf(t, resp, web.id)
		if !chains[0][1].Equal(third.issuer.Cert) || !chains[0][2].Equal(third.root.Cert) {
			t.Error("a certificate signed after the root rotation does not chain to the new root")
		}
		var bundle []*x509.Certificate
		for _, der := range resp.GetTrustBundle() {
			c, _ := x509.ParseCertificate(der)
			bundle = append(bundle, c)
		}
		if len(bundle) != 2 || !bundle[0].Equal(third.root.Cert) || !bundle[1].Equal(first.root.Cert) {
			t.Errorf("trust bundle has %d roots, want the new then the old", len(bundle))
		}
		nh := h.withRoots(third)
		if _, err := askWhoAmI(t, nh.dial(t, nil, oldCert)); err != nil {
			t.Errorf("a client with a certificate under the old root: %v", err)
		}
		if _, err := askWhoAmI(t, nh.dial(t, nil, cert)); err != nil {
			t.Errorf("a client with a certificate under the new root: %v", err)
		}
		if _, err := askWhoAmI(t, h.dial(t, first.pool(), nil)); status.Code(err) != codes.Unavailable {
			t.Errorf("a proxy that trusts only the old root accepted the server: %v", err)
		}
	})
}

// withRoots is h as seen by a client that trusts c's root.
func (h *harness) withRoots(c testCA) *harness {
	nh := *h
	nh.ca = c
	return &nh
}

func TestGarbageOnTheGRPCPort(t *testing.T) {
	h := startHarness(t, harnessOptions{})
	w := newWorkload(t, newNamespace(t), "web")

	junk := make([]byte, 64<<10)
	_, _ = rand.Read(junk)
	for name, payload := range map[string][]byte{
		"HTTP/1":                     []byte("GET / HTTP/1.1\r\nHost: trellis\r\n\r\n"),
		"random bytes":               junk,
		"HTTP/2 preface without TLS": []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
	} {
		conn, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = conn.Write(payload)
		// EOF (nil) or a reset: the server closed it; a timeout: it did not.
		if _, err := io.Copy(io.Discard, conn); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: the server did not close the connection: %v", name, err)
		}
		_ = conn.Close()
	}

	// TLS without ALPN (not gRPC) is closed after the handshake.
	if conn, err := tls.Dial("tcp", h.addr, &tls.Config{RootCAs: h.ca.pool(), ServerName: testServerName, MinVersion: tls.VersionTLS13}); err == nil {
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(io.Discard, conn)
		_ = conn.Close()
	}

	// Connections that say nothing hold no one up.
	var idle []net.Conn
	for range 200 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	defer func() {
		for _, c := range idle {
			_ = c.Close()
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.identity(t).Certify(ctx, &controlplanev1.CertifyRequest{Csr: w.csr, Token: w.token(t, TokenAudience)}); err != nil {
		t.Fatalf("Certify after garbage: %v", err)
	}
	if err := h.srv.Ready(); err != nil {
		t.Errorf("not ready after garbage: %v", err)
	}
}

func TestGracefulStop(t *testing.T) {
	c := newTestCA(t, 0)
	dir := t.TempDir()
	c.writeTo(t, dir)
	s := New(Config{Namespace: testNamespace, TrustDomain: testTrustDomain, SignerDir: dir}, kube, discardLogger())
	if err := s.LoadSigner(); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := s.GRPCServer()
	registerWhoAmI(gs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const grace = 300 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- s.ServeGRPC(ctx, gs, lis, grace) }()

	h := &harness{srv: s, addr: lis.Addr().String(), ca: c}
	stream, err := healthpb.NewHealthClient(h.dial(t, nil, nil)).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("not ready while serving: %v", err)
	}

	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeGRPC: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeGRPC did not return: a stream held the server past its grace period")
	}
	if took := time.Since(start); took < grace {
		t.Errorf("stopped after %v, before the grace period of %v: the stream was not given its time", took, grace)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
		t.Errorf("the open stream ended with %v, want it cut", err)
	}
	if err := s.Ready(); err == nil {
		t.Error("ready after the gRPC server stopped")
	}
}
