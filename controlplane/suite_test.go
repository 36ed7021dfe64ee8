package controlplane

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/trellis-mesh/trellis/ca"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/test/testenv"
)

// One API server for the package: it signs and reviews ServiceAccount
// tokens as a cluster's does. There is no controller manager, so tests
// create ServiceAccounts themselves and get tokens with TokenRequest.
var (
	testEnv *envtest.Environment
	restCfg *rest.Config
	kube    kubernetes.Interface
)

const (
	testTrustDomain = "cluster.local"
	testNamespace   = "trellis-system"
	// testServerName is a name the serving certificate must hold.
	testServerName = ServiceName + "." + testNamespace + ".svc"
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	env, cfg, _, err := testenv.Start(testenv.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}()
	cfg.QPS, cfg.Burst = 1000, 2000
	// As cmd/controlplane does: protobuf costs the API server less.
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	testEnv, restCfg = env, cfg
	if kube, err = kubernetes.NewForConfig(cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_, err = kube.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}, metav1.CreateOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// testClock is a server's clock; tests move it forward to reach expiries.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// testCA is a mesh CA: a root and an issuer below it.
type testCA struct {
	root, issuer *ca.KeyPair
}

func newTestCA(t testing.TB, issuerValidity time.Duration) testCA {
	t.Helper()
	root, err := ca.NewRoot(testTrustDomain, 0, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return testCA{root: root, issuer: newIssuer(t, root, issuerValidity)}
}

func newIssuer(t testing.TB, root *ca.KeyPair, validity time.Duration) *ca.KeyPair {
	t.Helper()
	iss, err := ca.NewIssuer(root, testTrustDomain, validity, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func (c testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.root.Cert)
	return p
}

// writeTo writes the files the kubelet projects from the CA Secret.
func (c testCA) writeTo(t testing.TB, dir string) {
	t.Helper()
	writeSigner(t, dir, map[string][]byte{
		ca.IssuerCertKey: c.issuer.FullChainPEM(),
		ca.IssuerKeyKey:  c.issuer.KeyPEM,
		ca.BundleKey:     c.root.CertPEM,
	})
}

// harness is a control plane serving gRPC over TLS on loopback.
type harness struct {
	srv   *Server
	clock *testClock
	dir   string
	addr  string
	ca    testCA
}

type harnessOptions struct {
	ca       *testCA // nil: a new one with a year-long issuer
	ttl      time.Duration
	cacheTTL time.Duration
	kube     kubernetes.Interface // nil: the envtest API server
	// register adds services to the gRPC server before it serves.
	register func(*grpc.Server)
}

func startHarness(t testing.TB, o harnessOptions) *harness {
	t.Helper()
	h := &harness{clock: &testClock{}, dir: t.TempDir()}
	if o.ca != nil {
		h.ca = *o.ca
	} else {
		h.ca = newTestCA(t, 0)
	}
	h.ca.writeTo(t, h.dir)
	if o.kube == nil {
		o.kube = kube
	}
	h.srv = New(Config{
		Mesh: "default", Namespace: testNamespace, TrustDomain: testTrustDomain, SignerDir: h.dir,
		WorkloadCertTTL: o.ttl, TokenCacheTTL: o.cacheTTL,
	}, o.kube, slog.New(slog.NewTextHandler(io.Discard, nil)))
	h.srv.now = h.clock.Now
	h.srv.reviewer.now = h.clock.Now
	if err := h.srv.LoadSigner(); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = lis.Addr().String()
	gs := h.srv.GRPCServer()
	if o.register != nil {
		o.register(gs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.srv.ServeGRPC(ctx, gs, lis, 5*time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeGRPC: %v", err)
		}
	})
	return h
}

// dial connects to the harness, checking its certificate against roots
// (the harness's root when nil) for testServerName, presenting client
// when it is not nil.
func (h *harness) dial(t testing.TB, roots *x509.CertPool, client *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	if roots == nil {
		roots = h.ca.pool()
	}
	tc := &tls.Config{RootCAs: roots, ServerName: testServerName, MinVersion: tls.VersionTLS13}
	if client != nil {
		tc.Certificates = []tls.Certificate{*client}
	}
	cc, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func (h *harness) identity(t testing.TB) controlplanev1.IdentityServiceClient {
	return controlplanev1.NewIdentityServiceClient(h.dial(t, nil, nil))
}

// workload is a ServiceAccount with a key and a CSR for its own identity.
type workload struct {
	namespace, name string
	id              string
	key             *ecdsa.PrivateKey
	csr             []byte
}

func spiffeID(ns, sa string) string { return "spiffe://" + testTrustDomain + "/ns/" + ns + "/sa/" + sa }

// newNamespace creates a namespace for one test.
func newNamespace(t testing.TB) string {
	t.Helper()
	ns, err := kube.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "shop-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// newWorkload creates ServiceAccount ns/name and a CSR for its SPIFFE ID.
func newWorkload(t testing.TB, ns, name string) *workload {
	t.Helper()
	_, err := kube.CoreV1().ServiceAccounts(ns).Create(context.Background(),
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w := &workload{namespace: ns, name: name, id: spiffeID(ns, name)}
	w.key, w.csr = newCSR(t, w.id)
	return w
}

func newCSR(t testing.TB, ids ...string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key, csrFor(t, key, &x509.CertificateRequest{URIs: urls(t, ids...)})
}

func csrFor(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func urls(t testing.TB, ss ...string) []*url.URL {
	t.Helper()
	var out []*url.URL
	for _, s := range ss {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

// token asks the API server for a token of w's ServiceAccount.
func (w *workload) token(t testing.TB, audiences ...string) string {
	t.Helper()
	return requestToken(t, w.namespace, w.name, &authnv1.TokenRequestSpec{Audiences: audiences})
}

func requestToken(t testing.TB, ns, name string, spec *authnv1.TokenRequestSpec) string {
	t.Helper()
	if spec.ExpirationSeconds == nil {
		spec.ExpirationSeconds = ptr.To[int64](600)
	}
	tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name,
		&authnv1.TokenRequest{Spec: *spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// tlsCertificate is the client certificate of a Certify answer.
func tlsCertificate(key crypto.Signer, resp *controlplanev1.CertifyResponse) *tls.Certificate {
	return &tls.Certificate{Certificate: resp.GetChain(), PrivateKey: key}
}

// expiredToken returns a token of w's ServiceAccount, audience trellis,
// that expired an hour ago, signed with the API server's own key. The
// TokenRequest API will not issue one (ten minutes is its shortest life), so
// this takes a real token, moves its times into the past and signs it
// again as the API server would.
func (w *workload) expiredToken(t testing.TB) string {
	t.Helper()
	parts := strings.Split(w.token(t, TokenAudience), ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-2 * time.Hour).Unix()
	claims["iat"], claims["nbf"], claims["exp"] = past, past, past+3600
	if payload, err = json.Marshal(claims); err != nil {
		t.Fatal(err)
	}
	signed := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload)

	pemBytes, err := os.ReadFile(filepath.Join(testEnv.ControlPlane.APIServer.CertDir, "sa-signer.key"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatal("no PEM in the API server's signing key")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("the API server signs tokens with a %T; this helper signs ES256 only", k)
	}
	sum := sha256.Sum256([]byte(signed))
	r, sig, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 64)
	r.FillBytes(raw[:32])
	sig.FillBytes(raw[32:])
	return signed + "." + base64.RawURLEncoding.EncodeToString(raw)
}
