package dashboard_test

import (
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/controlplane/traffic"
	"github.com/trellis-mesh/trellis/controlplane/traffic/traffictest"
	"github.com/trellis-mesh/trellis/latency"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

const trustDomain = traffictest.TrustDomain

// clockStart is where the Store's clock starts: two minutes behind the
// browser's, in the middle of a bucket, so that the proxies' "last report"
// ages read as in a cluster (minutes ago, not in the future) as the test
// moves it on. Replicas started with one clockStart agree.
func clockStart() time.Time {
	return time.Now().Add(-2 * time.Minute).Truncate(traffic.BucketWidth).Add(traffic.BucketWidth / 2)
}

// startControlPlane starts a control plane's traffic path (package
// traffictest) whose PodLookup knows the sample app's pods.
func startControlPlane(t *testing.T, start time.Time) *traffictest.ControlPlane {
	t.Helper()
	return traffictest.Start(t, traffictest.Options{
		Pods:  samplePods,
		Start: start,
		// A bucket is shown a second after it ends: the test's reports
		// are all in before it moves the clock.
		ReportInterval: time.Second,
	})
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
