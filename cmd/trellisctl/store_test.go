package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http/httptest"
	"regexp"
	"strings"
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

// controlPlaneTraffic is the control plane's real traffic path on loopback:
// its TelemetryService over gRPC with mutual TLS, feeding a traffic.Store,
// whose HTTP API trellisctl reads. Proxies are played by gRPC clients that
// hold workload certificates of the mesh's CA.
type controlPlaneTraffic struct {
	t      *testing.T
	store  *traffic.Store
	api    *httptest.Server
	grpc   string
	root   *ca.KeyPair
	issuer *ca.KeyPair

	mu  sync.Mutex
	now time.Time
}

// proxyPod is a pod the test's PodLookup knows.
type proxyPod struct {
	namespace, name, serviceAccount, workload string
}

func newControlPlaneTraffic(t *testing.T, pods ...proxyPod) *controlPlaneTraffic {
	t.Helper()
	// The store's clock starts at a bucket's start, so that a 10 s report
	// fills one bucket.
	cp := &controlPlaneTraffic{t: t, now: time.Now().Truncate(traffic.BucketWidth)}
	var err error
	if cp.root, err = ca.NewRoot(trustDomain, ca.DefaultRootValidity, time.Now()); err != nil {
		t.Fatal(err)
	}
	if cp.issuer, err = ca.NewIssuer(cp.root, trustDomain, ca.DefaultIssuerValidity, time.Now()); err != nil {
		t.Fatal(err)
	}
	known := map[string]traffic.PodInfo{}
	for _, p := range pods {
		known[p.namespace+"/"+p.name] = traffic.PodInfo{ServiceAccount: p.serviceAccount, Workload: p.workload, WorkloadKind: "Deployment"}
	}
	cp.store = traffic.NewStore(traffic.Options{
		Now: cp.clock,
		Pods: func(ns, name string) (traffic.PodInfo, bool) {
			info, ok := known[ns+"/"+name]
			return info, ok
		},
	})

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.SignServing(cp.issuer, key.Public(), []string{"localhost"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cp.root.Cert)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw, cp.issuer.Cert.Raw}, PrivateKey: key}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    roots,
		MinVersion:   tls.VersionTLS13,
	})))
	traffic.NewServer(cp.store).Register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	cp.grpc = lis.Addr().String()
	cp.api = httptest.NewServer(cp.store.Handler())
	t.Cleanup(cp.api.Close)
	return cp
}

func (cp *controlPlaneTraffic) clock() time.Time {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.now
}

func (cp *controlPlaneTraffic) advance(d time.Duration) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.now = cp.now.Add(d)
}

// report sends one report of pod, as its proxy would, on a stream of a
// connection with the pod's certificate. With keepOpen, the stream stays
// open (the proxy is connected) until the test ends.
func (cp *controlPlaneTraffic) report(p proxyPod, version string, keepOpen bool, rows ...*controlplanev1.TrafficRow) {
	t := cp.t
	t.Helper()
	id := "spiffe://" + trustDomain + "/ns/" + p.namespace + "/sa/" + p.serviceAccount
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.SignWorkloadKey(cp.issuer, key.Public(), id, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cp.root.Cert)
	conn, err := grpc.NewClient(cp.grpc, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw, cp.issuer.Cert.Raw}, PrivateKey: key}},
		RootCAs:      roots,
		ServerName:   "localhost",
		MinVersion:   tls.VersionTLS13,
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
	configAt := cp.clock().Add(-2 * time.Second)
	req := &controlplanev1.ReportRequest{
		Proxy: &controlplanev1.ProxyInfo{Namespace: p.namespace, Pod: p.name, Identity: id, Version: version,
			CertNotAfter: timestamppb.New(leaf.NotAfter), LastConfigAt: timestamppb.New(configAt), DiscoveryStreams: 2},
		Interval:              durationpb.New(traffic.BucketWidth),
		LatencyBucketBoundsMs: latency.BoundsMs[:],
		Rows:                  rows,
	}
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	if !keepOpen {
		if _, err := stream.CloseAndRecv(); err != nil {
			t.Fatalf("report of %s/%s refused: %v", p.namespace, p.name, err)
		}
		return
	}
	// The report is in once the store knows the proxy.
	deadline := time.Now().Add(5 * time.Second)
	for !hasProxy(cp.store.Proxies(p.namespace), p.name) {
		if time.Now().After(deadline) {
			t.Fatalf("the control plane never took the report of %s/%s", p.namespace, p.name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func hasProxy(ps []traffic.ProxyStatus, pod string) bool {
	for _, p := range ps {
		if p.Pod == pod && p.Connected {
			return true
		}
	}
	return false
}

// latencies is a row's histogram with n requests all of ms milliseconds.
func latencies(n uint64, ms float64) ([]uint32, []uint64) {
	return []uint32{uint32(latency.BucketOf(time.Duration(ms * float64(time.Millisecond))))}, []uint64{n}
}

// TestTrafficCommandsReadTheControlPlanesStore runs stat, edges,
// proxy-status and check against the control plane's own Store and API, fed
// by reports over its mTLS gRPC service: the converter fails half the
// temperature API's calls, as in issue 9's end-to-end test.
func TestTrafficCommandsReadTheControlPlanesStore(t *testing.T) {
	api := proxyPod{"temperature", "temperature-api-7d9c-x1", "temperature-api", "temperature-api"}
	conv := proxyPod{"temperature", "converter-5f6b-q2", "converter", "converter"}
	cp := newControlPlaneTraffic(t, api, conv)
	apiID := "spiffe://cluster.local/ns/temperature/sa/temperature-api"
	convID := "spiffe://cluster.local/ns/temperature/sa/converter"

	// Over 10 s, the API sent the converter 1000 requests in mTLS and half
	// failed; the converter's proxy served them.
	sent := &controlplanev1.TrafficRow{
		Direction: controlplanev1.Direction_DIRECTION_OUTBOUND, PeerIdentity: convID, PeerPod: conv.name, Service: "temperature/converter", Mtls: true,
		Requests: 1000, Successes: 500, RequestBytes: 1000, ResponseBytes: 5000,
	}
	sent.LatencyBuckets, sent.LatencyBucketCounts = latencies(1000, 10)
	cp.report(api, "v0.1.0", true, sent)
	served := &controlplanev1.TrafficRow{
		Direction: controlplanev1.Direction_DIRECTION_INBOUND, PeerIdentity: apiID, Mtls: true,
		Requests: 1000, Successes: 500, RequestBytes: 1000, ResponseBytes: 5000,
	}
	served.LatencyBuckets, served.LatencyBucketCounts = latencies(1000, 3.5)
	cp.report(conv, "v0.0.9", false, served)
	// The bucket is shown once every report that may cover it has come.
	cp.advance(2 * traffic.BucketWidth)
	url := "--control-plane-url=" + cp.api.URL

	out, _, err := run(t, "trellisctl", "stat", "deploy", "converter", "-n", "temperature", url, noCluster(t))
	if err != nil {
		t.Fatal(err)
	}
	rows := fields(out)
	// 1000 requests over the 1m window; p50 the 3.5 ms they took, within
	// the histogram's 4.3%.
	if len(rows) != 2 || strings.Join(rows[1][:4], " ") != "converter 1 50.00% 16.7rps" || rows[1][4] != "3.5ms" {
		t.Errorf("stat deploy converter printed\n%s", out)
	}
	out, _, err = run(t, "trellisctl", "stat", "svc", "-n", "temperature", "-o", "json", url, noCluster(t))
	if err != nil {
		t.Fatal(err)
	}
	var svc traffic.StatResponse
	if err := json.Unmarshal([]byte(out), &svc); err != nil || len(svc.Rows) != 1 || svc.Rows[0].Name != "converter" || svc.Rows[0].Requests != 1000 {
		t.Errorf("stat svc -o json (%v):\n%s", err, out)
	}

	out, _, err = run(t, "trellisctl", "edges", "-n", "temperature", url, noCluster(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "temperature-api   converter") || !strings.Contains(out, " yes ") || !strings.Contains(out, apiID) || !strings.Contains(out, convID) {
		t.Errorf("edges printed\n%s", out)
	}

	out, _, err = run(t, "trellisctl", "proxy-status", "-n", "temperature", "--proxy-version", "v0.1.0", url, noCluster(t))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`converter-5f6b-q2 +converter +v0.0.9 .* outdated: runs v0.0.9, the Mesh wants v0.1.0; not connected; last report`).MatchString(out) ||
		!regexp.MustCompile(`temperature-api-7d9c-x1 +temperature-api +v0.1.0 +23h59m +\d+s +2 +\d+s +ok`).MatchString(out) {
		t.Errorf("proxy-status printed\n%s", out)
	}

	// check names the failing workload from the same API.
	f := newMeshFixture(t)
	f.replica.URL = cp.api.URL
	report, table, err := f.check()
	if err == nil || report.Success {
		t.Fatalf("check passed with the converter failing half its requests:\n%s", table)
	}
	c := find(t, report, "data plane of mesh default", "workloads succeed on at least 95% of their requests")
	if len(c.Details) != 1 || c.Details[0] != "converter in ns temperature: success 50.0% over 1m (1000 requests); see `trellisctl stat -n temperature`" {
		t.Errorf("check: %+v", c)
	}
}
