package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/controlplane/traffic"
	"github.com/trellis-mesh/trellis/controlplane/traffic/traffictest"
	"github.com/trellis-mesh/trellis/latency"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// temperaturePods are the temperature app's pods, as the control plane's PodLookup
// knows them.
var temperaturePods = map[[2]string]traffic.PodInfo{
	{"temperature", "temperature-api-7d9c-x1"}: {ServiceAccount: "temperature-api", Workload: "temperature-api", WorkloadKind: "Deployment"},
	{"temperature", "converter-5f6b-q1"}:       {ServiceAccount: "converter", Workload: "converter", WorkloadKind: "Deployment"},
	{"temperature", "converter-5f6b-q2"}:       {ServiceAccount: "converter", Workload: "converter", WorkloadKind: "Deployment"},
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
	cp := traffictest.Start(t, traffictest.Options{Pods: temperaturePods})
	api := cp.Proxy(t, "temperature", "temperature-api-7d9c-x1")
	api.Info.Version = "v0.1.0"
	conv := cp.Proxy(t, "temperature", "converter-5f6b-q2")
	conv.Info.Version = "v0.0.9"
	apiID := "spiffe://cluster.local/ns/temperature/sa/temperature-api"
	convID := "spiffe://cluster.local/ns/temperature/sa/converter"

	// Over 10 s, the API sent the converter 1000 requests in mTLS and half
	// failed; the converter's proxy served them, and went away.
	sent := &controlplanev1.TrafficRow{
		Direction: controlplanev1.Direction_DIRECTION_OUTBOUND, PeerIdentity: convID, PeerPod: conv.Info.Pod, Service: "temperature/converter", Mtls: true,
		Requests: 1000, Successes: 500, RequestBytes: 1000, ResponseBytes: 5000,
	}
	sent.LatencyBuckets, sent.LatencyBucketCounts = latencies(1000, 10)
	api.Report(sent)
	served := &controlplanev1.TrafficRow{
		Direction: controlplanev1.Direction_DIRECTION_INBOUND, PeerIdentity: apiID, Mtls: true,
		Requests: 1000, Successes: 500, RequestBytes: 1000, ResponseBytes: 5000,
	}
	served.LatencyBuckets, served.LatencyBucketCounts = latencies(1000, 3.5)
	conv.Report(served)
	if err := conv.Close(); err != nil {
		t.Fatalf("report of the converter refused: %v", err)
	}
	// The bucket is shown once every report that may cover it has come.
	cp.Settle(t, api, conv)
	url := "--control-plane-url=" + cp.API.URL

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
	f.replica.URL = cp.API.URL
	report, table, err := f.check()
	if err == nil || report.Success {
		t.Fatalf("check passed with the converter failing half its requests:\n%s", table)
	}
	c := find(t, report, "data plane of mesh default", "workloads succeed on at least 95% of their requests")
	if len(c.Details) != 1 || c.Details[0] != "converter in ns temperature: success 50.0% over 1m (1000 requests); see `trellisctl stat -n temperature`" {
		t.Errorf("check: %+v", c)
	}
}
