package traffictest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/trellis-mesh/trellis/ca"
	"github.com/trellis-mesh/trellis/controlplane"
	"github.com/trellis-mesh/trellis/controlplane/traffic"
	"github.com/trellis-mesh/trellis/latency"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

const (
	// TrustDomain is the test mesh's trust domain.
	TrustDomain = "cluster.local"
	// ProxyVersion is the version a Proxy reports unless the test sets
	// Proxy.Info.Version.
	ProxyVersion = "v0.9.0-test"
	// WorkloadCertTTL is the life of a proxy's workload certificate, as
	// the control plane's Certify signs it by default: a proxy's
	// certificate expires about a day after it connected.
	WorkloadCertTTL = 24 * time.Hour

	// namespace is the control plane's namespace, which its serving
	// certificate names.
	namespace = "trellis-system"
	// serverName is the name proxies reach the control plane by.
	serverName = controlplane.ServiceName + "." + namespace + ".svc"
	// grace bounds the control plane's graceful stop at the test's end,
	// in case a stream is still open.
	grace = time.Second
)

// Options configure a ControlPlane.
type Options struct {
	// Pods are the pods the Store's PodLookup knows, by namespace and
	// name; Proxy connects as the ServiceAccount given here. Without
	// any, the Store has no PodLookup (workloads are pods).
	Pods map[[2]string]traffic.PodInfo
	// Start is the Store's clock until the test moves it. Zero is now,
	// truncated to a bucket's start, so that a report of BucketWidth
	// fills one bucket. Two control planes given one Start agree.
	Start time.Time
	// ReportInterval is the Store's (traffic.Options.ReportInterval):
	// how long after its end a bucket is shown. 10s when zero.
	ReportInterval time.Duration
}

// ControlPlane is one control plane replica's traffic path, serving on
// loopback until the test ends.
type ControlPlane struct {
	// Store is the replica's Store; the test may set its peers.
	Store *traffic.Store
	// API serves Store.Handler(); API.URL is what trellisctl's
	// --control-plane-url and the dashboard read. Closing it early plays
	// a replica that stopped answering.
	API *httptest.Server
	// Addr is the gRPC address proxies dial.
	Addr string

	issuer *ca.KeyPair
	roots  *x509.CertPool
	pods   map[[2]string]traffic.PodInfo

	mu  sync.Mutex
	now time.Time
}

// Start starts a control plane replica: a new test CA whose issuer signs
// the control plane's serving certificate (controlplane.Server loads it
// from files, as from the operator's Secret) and the proxies' workload
// certificates.
func Start(t *testing.T, o Options) *ControlPlane {
	t.Helper()
	wall := time.Now()
	root, err := ca.NewRoot(TrustDomain, ca.DefaultRootValidity, wall.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := ca.NewIssuer(root, TrustDomain, ca.DefaultIssuerValidity, wall.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range map[string][]byte{ca.IssuerCertKey: issuer.FullChainPEM(), ca.IssuerKeyKey: issuer.KeyPEM, ca.BundleKey: root.CertPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := controlplane.New(controlplane.Config{Mesh: "default", Namespace: namespace, TrustDomain: TrustDomain, SignerDir: dir}, nil, quiet)
	if err := srv.LoadSigner(); err != nil {
		t.Fatal(err)
	}

	cp := &ControlPlane{issuer: issuer, roots: x509.NewCertPool(), pods: o.Pods, now: o.Start}
	cp.roots.AddCert(root.Cert)
	if cp.now.IsZero() {
		cp.now = wall.Truncate(traffic.BucketWidth)
	}
	so := traffic.Options{ReportInterval: o.ReportInterval, Now: cp.Now}
	if len(o.Pods) > 0 {
		so.Pods = func(namespace, name string) (traffic.PodInfo, bool) {
			info, ok := o.Pods[[2]string{namespace, name}]
			return info, ok
		}
	}
	cp.Store = traffic.NewStore(so)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp.Addr = lis.Addr().String()
	gs := srv.GRPCServer()
	traffic.NewServer(cp.Store).Register(gs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeGRPC(ctx, gs, lis, grace) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the control plane's gRPC server: %v", err)
		}
	})
	cp.API = httptest.NewServer(cp.Store.Handler())
	t.Cleanup(cp.API.Close)
	return cp
}

// Now is the Store's clock.
func (cp *ControlPlane) Now() time.Time {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.now
}

// Advance moves the Store's clock by d (back, when negative).
func (cp *ControlPlane) Advance(d time.Duration) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.now = cp.now.Add(d)
}

// workloadCert is a certificate of the workload id, with its issuer chain,
// signed by the control plane's issuer.
func (cp *ControlPlane) workloadCert(t *testing.T, id string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.SignWorkloadKey(cp.issuer, key.Public(), id, WorkloadCertTTL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	for _, c := range ca.IssuerChain(cp.issuer) {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert
}

// Dial connects to the control plane as the workload of ServiceAccount
// serviceAccount in namespace, with a certificate of the mesh's issuer, as
// a proxy does; for a test that drives the TelemetryService itself (a
// proxy's Reporter, a malformed report). The connection closes when t ends.
func (cp *ControlPlane) Dial(t *testing.T, namespace, serviceAccount string) *grpc.ClientConn {
	t.Helper()
	conn, _ := cp.dial(t, spiffeID(t, namespace, serviceAccount))
	return conn
}

func (cp *ControlPlane) dial(t *testing.T, id string) (*grpc.ClientConn, *x509.Certificate) {
	t.Helper()
	cert := cp.workloadCert(t, id)
	conn, err := grpc.NewClient(cp.Addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      cp.roots,
		ServerName:   serverName,
		Certificates: []tls.Certificate{cert},
	})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, cert.Leaf
}

func spiffeID(t *testing.T, namespace, serviceAccount string) string {
	t.Helper()
	id, err := ca.SPIFFEID(TrustDomain, namespace, serviceAccount)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Proxy is one pod's proxy: a Report stream on its own connection, with
// the workload certificate of the pod's ServiceAccount.
type Proxy struct {
	// Info is what each report says of the proxy; the test may change it
	// (a version) before a report.
	Info *controlplanev1.ProxyInfo

	t      *testing.T
	stream grpc.ClientStreamingClient[controlplanev1.ReportRequest, controlplanev1.ReportResponse]
}

// Proxy connects the proxy of pod namespace/name, which Options.Pods must
// know, and opens its Report stream; it stays connected until the test
// ends or Close. It reports version ProxyVersion, its certificate's
// expiry, a discovery answer half a minute ago and 2 discovery streams.
func (cp *ControlPlane) Proxy(t *testing.T, namespace, name string) *Proxy {
	t.Helper()
	info, ok := cp.pods[[2]string{namespace, name}]
	if !ok {
		t.Fatalf("traffictest: pod %s/%s is not in Options.Pods; add it with its ServiceAccount", namespace, name)
	}
	id := spiffeID(t, namespace, info.ServiceAccount)
	conn, leaf := cp.dial(t, id)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := controlplanev1.NewTelemetryServiceClient(conn).Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &Proxy{t: t, stream: stream, Info: &controlplanev1.ProxyInfo{
		Namespace: namespace, Pod: name, Identity: id, Version: ProxyVersion,
		CertNotAfter: timestamppb.New(leaf.NotAfter), LastConfigAt: timestamppb.New(time.Now().Add(-30 * time.Second)),
		DiscoveryStreams: 2,
	}}
}

// Report sends one report of rows covering BucketWidth (a proxy's default
// report interval), ending at the Store's now. The Store takes it
// asynchronously: Settle waits for it.
func (p *Proxy) Report(rows ...*controlplanev1.TrafficRow) {
	p.t.Helper()
	err := p.stream.Send(&controlplanev1.ReportRequest{
		Proxy: p.Info, Interval: durationpb.New(traffic.BucketWidth), LatencyBucketBoundsMs: latency.BoundsMs[:], Rows: rows,
	})
	if err != nil {
		p.t.Fatalf("report of %s/%s: %v", p.Info.Namespace, p.Info.Pod, err)
	}
}

// Close ends the Report stream, as a proxy that went away, and returns the
// control plane's answer: nil once it took every report, or why it
// refused one.
func (p *Proxy) Close() error {
	_, err := p.stream.CloseAndRecv()
	return err
}

// Settle waits until the Store has taken the latest report of each of
// proxies (its last report is at the clock's now), then moves the clock
// two buckets on, past the reports' buckets and the ReportInterval
// after them, so that the API shows them.
func (cp *ControlPlane) Settle(t *testing.T, proxies ...*Proxy) {
	t.Helper()
	now := cp.Now()
	deadline := time.Now().Add(10 * time.Second)
	for {
		seen := map[[2]string]time.Time{}
		for _, ps := range cp.Store.Proxies("") {
			seen[[2]string{ps.Namespace, ps.Pod}] = ps.LastReportAt
		}
		missing := ""
		for _, p := range proxies {
			if at := seen[[2]string{p.Info.Namespace, p.Info.Pod}]; !at.Equal(now) {
				missing = p.Info.Namespace + "/" + p.Info.Pod
				break
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store has not taken the report of %s in 10 s", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cp.Advance(2 * traffic.BucketWidth)
}

// GetJSON reads url of the API as trellisctl and the page do, and decodes
// its answer, which must be 200 OK.
func GetJSON[T any](t *testing.T, url string) T {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	var v T
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return v
}
