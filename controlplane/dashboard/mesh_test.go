package dashboard_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/trellis-mesh/trellis/ca"
	"github.com/trellis-mesh/trellis/controlplane/traffic"
	"github.com/trellis-mesh/trellis/latency"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

const (
	trustDomain = "cluster.local"
	serverName  = "trellis-controlplane.trellis-system.svc"
	// reportInterval is the interval every test report covers, as a
	// proxy's default --report-interval.
	reportInterval = 10 * time.Second
)

// frozenClock is the Store's clock: it moves only when the test says, so
// that what the API answers stays put while the page and the test read it.
type frozenClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *frozenClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *frozenClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// controlPlane is the traffic part of a control plane: a real Store fed by
// the TelemetryService over gRPC with mutual TLS, as proxies feed it, and
// its HTTP API.
type controlPlane struct {
	t      *testing.T
	clock  *frozenClock
	store  *traffic.Store
	issuer *ca.KeyPair
	roots  *x509.CertPool
	addr   string
	pods   map[[2]string]traffic.PodInfo
}

func startControlPlane(t *testing.T, pods map[[2]string]traffic.PodInfo) *controlPlane {
	t.Helper()
	// The clock starts two minutes behind the browser's, in the middle of
	// a bucket, so that the proxies' "last report" ages read as in a
	// cluster (minutes ago, not in the future) as the test moves it on.
	start := time.Now().Add(-2 * time.Minute).Truncate(traffic.BucketWidth).Add(traffic.BucketWidth / 2)
	clock := &frozenClock{now: start}
	wall := time.Now()
	root, err := ca.NewRoot(trustDomain, 72*time.Hour, wall.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := ca.NewIssuer(root, trustDomain, 48*time.Hour, wall.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.SignServing(issuer, key.Public(), []string{serverName}, time.Hour, wall)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root.Cert)
	chain := [][]byte{leaf.Raw}
	for _, c := range ca.IssuerChain(issuer) {
		chain = append(chain, c.Raw)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: key, Leaf: leaf}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    roots,
	})))
	cp := &controlPlane{t: t, clock: clock, issuer: issuer, roots: roots, pods: pods}
	cp.store = traffic.NewStore(traffic.Options{
		// A bucket is shown a second after it ends: the test's reports
		// are all in before it moves the clock.
		ReportInterval: time.Second,
		Now:            clock.Now,
		Pods: func(namespace, name string) (traffic.PodInfo, bool) {
			info, ok := pods[[2]string{namespace, name}]
			return info, ok
		},
	})
	traffic.NewServer(cp.store).Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	cp.addr = lis.Addr().String()
	return cp
}

func spiffeID(t *testing.T, namespace, serviceAccount string) string {
	t.Helper()
	id, err := ca.SPIFFEID(trustDomain, namespace, serviceAccount)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// proxy is one pod's proxy's Report stream, with the pod's own workload
// certificate.
type proxy struct {
	cp     *controlPlane
	info   *controlplanev1.ProxyInfo
	stream grpc.ClientStreamingClient[controlplanev1.ReportRequest, controlplanev1.ReportResponse]
}

func (cp *controlPlane) proxy(namespace, pod string) *proxy {
	t := cp.t
	t.Helper()
	sa := cp.pods[[2]string{namespace, pod}].ServiceAccount
	id := spiffeID(t, namespace, sa)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.SignWorkloadKey(cp.issuer, key.Public(), id, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	chain := [][]byte{leaf.Raw}
	for _, c := range ca.IssuerChain(cp.issuer) {
		chain = append(chain, c.Raw)
	}
	conn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      cp.roots,
		ServerName:   serverName,
		Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: key, Leaf: leaf}},
	})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := controlplanev1.NewTelemetryServiceClient(conn).Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &proxy{cp: cp, stream: stream, info: &controlplanev1.ProxyInfo{
		Namespace: namespace, Pod: pod, Identity: id, Version: "v0.9.0-test",
		CertNotAfter: timestamppb.New(leaf.NotAfter), LastConfigAt: timestamppb.New(time.Now().Add(-30 * time.Second)),
		DiscoveryStreams: 2,
	}}
}

// report sends one interval's rows.
func (p *proxy) report(rows ...*controlplanev1.TrafficRow) {
	p.cp.t.Helper()
	err := p.stream.Send(&controlplanev1.ReportRequest{
		Proxy: p.info, Interval: durationpb.New(reportInterval), LatencyBucketBoundsMs: latency.BoundsMs[:], Rows: rows,
	})
	if err != nil {
		p.cp.t.Fatalf("report of %s/%s: %v", p.info.Namespace, p.info.Pod, err)
	}
}

// withLatency gives row a histogram of its requests: most take fastMs,
// one in fifty slowMs, so that p99 is the latter. It returns row.
func withLatency(row *controlplanev1.TrafficRow, fastMs, slowMs float64) *controlplanev1.TrafficRow {
	var counts [latency.Buckets]uint64
	slow := row.Requests / 50
	counts[latency.BucketOf(time.Duration(fastMs*float64(time.Millisecond)))] += row.Requests - slow
	counts[latency.BucketOf(time.Duration(slowMs*float64(time.Millisecond)))] += slow
	for i, c := range counts {
		if c > 0 {
			row.LatencyBuckets = append(row.LatencyBuckets, uint32(i))
			row.LatencyBucketCounts = append(row.LatencyBucketCounts, c)
		}
	}
	return row
}

// settle waits until the store has taken every proxy's latest report
// (its lastReportAt is the clock's now), then moves the clock past the
// reports' buckets, so that the API shows them.
func (cp *controlPlane) settle(proxies ...*proxy) {
	t := cp.t
	t.Helper()
	now := cp.clock.Now()
	deadline := time.Now().Add(10 * time.Second)
	for {
		seen := map[string]time.Time{}
		for _, ps := range cp.store.Proxies("") {
			seen[ps.Namespace+"/"+ps.Pod] = ps.LastReportAt
		}
		missing := ""
		for _, p := range proxies {
			if at := seen[p.info.Namespace+"/"+p.info.Pod]; !at.Equal(now) {
				missing = p.info.Namespace + "/" + p.info.Pod
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
	cp.clock.Advance(2 * traffic.BucketWidth)
}

// edges reads the API as the page does.
func getJSON[T any](t *testing.T, url string) T {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var v T
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return v
}
