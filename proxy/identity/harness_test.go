package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/trellis-mesh/trellis/ca"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

const (
	trustDomain = "cluster.local"
	namespace   = "default"
	// cpName is the control plane's name in its serving certificate and
	// what the managers ask for.
	cpName = "trellis-controlplane.trellis-system.svc"
)

func spiffeID(sa string) string { return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + sa }

// testCA is a mesh CA made by package ca, started three hours ago so that
// it can sign leaves that have already expired.
type testCA struct {
	root, issuer *ca.KeyPair
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	start := time.Now().Add(-3 * time.Hour)
	root, err := ca.NewRoot(trustDomain, 0, start)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := ca.NewIssuer(root, trustDomain, 0, start)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{root: root, issuer: issuer}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// workload is a certificate for id signed with ca.SignWorkloadKey at
// signedAt, valid for ttl.
func (c *testCA) workload(t *testing.T, id string, signedAt time.Time, ttl time.Duration) *tls.Certificate {
	t.Helper()
	key := newKey(t)
	leaf, err := ca.SignWorkloadKey(c.issuer, key.Public(), id, ttl, signedAt)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw, c.issuer.Cert.Raw}, PrivateKey: key, Leaf: leaf}
}

// crafted is a leaf that ca.SignWorkloadKey would not sign (several URI
// SANs, another trust domain, one key usage), signed by the issuer all the
// same.
func (c *testCA) crafted(t *testing.T, key crypto.Signer, uris []string, eku ...x509.ExtKeyUsage) *tls.Certificate {
	t.Helper()
	if key == nil {
		key = newKey(t)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.issuer.Cert, key.Public(), c.issuer.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, c.issuer.Cert.Raw}, PrivateKey: key, Leaf: leaf}
}

// controlPlane is a real IdentityService on loopback: TLS with a serving
// certificate from the mesh CA, client certificates optional as in the
// real one, tokens checked against a map.
type controlPlane struct {
	controlplanev1.UnimplementedIdentityServiceServer
	ca   *testCA
	ttl  time.Duration
	addr string

	mu      sync.Mutex
	tokens  map[string]string // token → ServiceAccount name in namespace
	csrs    [][]byte          // every request's CSR
	callers []string          // each call's verified client SPIFFE ID, "" for none
}

func startControlPlane(t *testing.T, ttl time.Duration) *controlPlane {
	t.Helper()
	cp := &controlPlane{ca: newTestCA(t), ttl: ttl, tokens: map[string]string{}}
	key := newKey(t)
	serving, err := ca.SignServing(cp.ca.issuer, key.Public(), []string{"trellis-controlplane", cpName}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cp.ca.root.Cert)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{serving.Raw, cp.ca.issuer.Cert.Raw}, PrivateKey: key, Leaf: serving}},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    roots,
	})))
	controlplanev1.RegisterIdentityServiceServer(gs, cp)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp.addr = lis.Addr().String()
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return cp
}

func (cp *controlPlane) Certify(ctx context.Context, req *controlplanev1.CertifyRequest) (*controlplanev1.CertifyResponse, error) {
	caller := ""
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 {
			caller = info.State.VerifiedChains[0][0].URIs[0].String()
		}
	}
	cp.mu.Lock()
	cp.csrs = append(cp.csrs, req.GetCsr())
	cp.callers = append(cp.callers, caller)
	sa, ok := cp.tokens[req.GetToken()]
	cp.mu.Unlock()
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "the token is not valid: TokenReview says it is not authenticated")
	}
	csr, asked, err := ca.CheckWorkloadCSR(req.GetCsr(), trustDomain)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if asked != spiffeID(sa) {
		return nil, status.Errorf(codes.PermissionDenied, "the request asks for %s, the token may have %s only", asked, spiffeID(sa))
	}
	return cp.sign(csr.PublicKey, asked, cp.ttl), nil
}

// sign is the control plane's answer for pub and id.
func (cp *controlPlane) sign(pub crypto.PublicKey, id string, ttl time.Duration) *controlplanev1.CertifyResponse {
	now := time.Now()
	leaf, err := ca.SignWorkloadKey(cp.ca.issuer, pub, id, ttl, now)
	if err != nil {
		panic(err)
	}
	return &controlplanev1.CertifyResponse{
		Chain:        [][]byte{leaf.Raw, cp.ca.issuer.Cert.Raw},
		TrustBundle:  [][]byte{cp.ca.root.Cert.Raw},
		NotAfter:     timestamppb.New(leaf.NotAfter),
		RefreshAfter: timestamppb.New(now.Add(leaf.NotAfter.Sub(now) / 2)),
	}
}

// token registers a token for ServiceAccount sa and returns it.
func (cp *controlPlane) token(sa string) string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	tok := "token-of-" + sa
	cp.tokens[tok] = sa
	return tok
}

func (cp *controlPlane) lastCaller() string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.callers[len(cp.callers)-1]
}

// dial is a gRPC IdentityService client of cp over TLS configured by cfg.
func (cp *controlPlane) dial(t *testing.T, cfg *tls.Config) controlplanev1.IdentityServiceClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+cp.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return controlplanev1.NewIdentityServiceClient(cc)
}

// testManager is a Manager with its files, log and metrics.
type testManager struct {
	*Manager
	log        *syncBuffer
	reg        *prometheus.Registry
	tokenFile  string
	bundleFile string
}

// manager makes a Manager for ServiceAccount sa that reads token and
// trusts cp's root, calling cp through a real gRPC client made with its
// own ControlPlaneTLS. edit, when not nil, changes the options first.
func (cp *controlPlane) manager(t *testing.T, sa, token string, edit func(*Options)) *testManager {
	t.Helper()
	dir := t.TempDir()
	tm := &testManager{
		log:        &syncBuffer{},
		reg:        prometheus.NewRegistry(),
		tokenFile:  filepath.Join(dir, "token"),
		bundleFile: filepath.Join(dir, "ca.crt"),
	}
	writeFile(t, tm.tokenFile, []byte(token))
	writeFile(t, tm.bundleFile, ca.EncodeCertificates(cp.ca.root.Cert))
	var client controlplanev1.IdentityServiceClient
	o := Options{
		TrustDomain:     trustDomain,
		Namespace:       namespace,
		ServiceAccount:  sa,
		TokenFile:       tm.tokenFile,
		TrustBundleFile: tm.bundleFile,
		Certify: func(ctx context.Context, req *controlplanev1.CertifyRequest) (*controlplanev1.CertifyResponse, error) {
			return client.Certify(ctx, req)
		},
		Log:        slog.New(slog.NewTextHandler(tm.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: tm.reg,
	}
	if edit != nil {
		edit(&o)
	}
	m, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	tm.Manager = m
	client = cp.dial(t, m.ControlPlaneTLS(cpName))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of %s:\n%s", m.ID(), tm.log)
		}
	})
	return tm
}

// run runs m until the test ends, and checks that Run returns then.
func run(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		m.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
}

// started is a running Manager holding its first certificate.
func (cp *controlPlane) started(t *testing.T, sa string) *testManager {
	t.Helper()
	tm := cp.manager(t, sa, cp.token(sa), nil)
	run(t, tm.Manager)
	waitReady(t, tm.Manager)
	return tm
}

func waitReady(t *testing.T, m *Manager) {
	t.Helper()
	select {
	case <-m.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s got no certificate within 10s", m.ID())
	}
}

// eventually polls cond every 20 ms for up to timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeFile replaces path's content at once, as the kubelet's atomic
// writer does for projected and ConfigMap volumes.
func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// side is one end of a connection after its handshake and a one-byte
// exchange (which makes the client read the server's session tickets).
type side struct {
	state tls.ConnectionState
	err   error
}

// handshake connects a client with clientCfg to a server with serverCfg
// over TCP on loopback.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (server, client side) {
	t.Helper()
	l := listen(t, serverCfg)
	client = l.dial(t, clientCfg)
	return <-l.served, client
}

// listener is a TLS server on loopback; each connection's server side is
// sent to served.
type listener struct {
	addr   string
	served chan side
}

func listen(t *testing.T, serverCfg *tls.Config) *listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	l := &listener{addr: ln.Addr().String(), served: make(chan side, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { l.served <- serveOne(c, serverCfg) }()
		}
	}()
	return l
}

func serveOne(c net.Conn, cfg *tls.Config) side {
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Server(c, cfg)
	if err := tc.Handshake(); err != nil {
		return side{err: err}
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(tc, b); err != nil {
		return side{err: err}
	}
	if _, err := tc.Write(b); err != nil {
		return side{err: err}
	}
	return side{state: tc.ConnectionState()}
}

// dial connects to l with clientCfg and returns the client's side.
func (l *listener) dial(t *testing.T, clientCfg *tls.Config) side {
	t.Helper()
	raw, err := net.Dial("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(raw, clientCfg)
	defer func() { _ = tc.Close() }()
	b := []byte{1}
	if err := tc.Handshake(); err != nil {
		return side{err: err}
	}
	if _, err := tc.Write(b); err != nil {
		return side{err: err}
	}
	if _, err := io.ReadFull(tc, b); err != nil {
		// TLS 1.3: a server refusing the client's certificate says so
		// after the client's handshake is done.
		return side{err: err}
	}
	return side{state: tc.ConnectionState()}
}

// peerClient is a client that presents cert (none when nil) and trusts
// any server: for tests of what a server accepts.
func peerClient(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// peerServer is a server that presents cert and asks for no client
// certificate: for tests of what a client accepts.
func peerServer(cert *tls.Certificate) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*cert}}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) count(sub string) int { return strings.Count(s.String(), sub) }

// metric is the value of the series of reg named name whose labels
// include the label=value pairs of labels.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue series
				}
			}
			switch {
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}
