//go:build e2e

package e2e

import (
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/trellis-mesh/trellis/proxy/tracing/otlptest"
)

// nodeIP is the local cluster node's address on its own bridge: pods reach
// the host there.
const nodeIP = "10.250.0.1"

// joined counts the API's client spans, the converters' server spans, and
// the server spans whose parent is one of the client spans: the two
// proxies of one call, in one trace.
func joined(r *otlptest.Receiver) (client, server, joined int) {
	spans := r.Spans()
	clients := map[string]bool{}
	for _, sp := range spans[meshedNamespace+"/temperature-api"] {
		if sp.Kind == tracepb.Span_SPAN_KIND_CLIENT {
			clients[hex.EncodeToString(sp.TraceId)+"/"+hex.EncodeToString(sp.SpanId)] = true
			client++
		}
	}
	for _, sp := range spans[meshedNamespace+"/converter"] {
		if sp.Kind == tracepb.Span_SPAN_KIND_SERVER {
			server++
			if clients[hex.EncodeToString(sp.TraceId)+"/"+hex.EncodeToString(sp.ParentSpanId)] {
				joined++
			}
		}
	}
	return client, server, joined
}

// TestSpansReachAnOTLPReceiver: with the Mesh's tracing pointed at a
// receiver that the test runs, the API's proxy and the converters' proxies
// export a span for each call, joined in one trace.
func TestSpansReachAnOTLPReceiver(t *testing.T) {
	sink := otlptest.Start(t, nodeIP+":0")

	// The routes of the tests before must not get in the way.
	kubectl(t, "-n", meshedNamespace, "delete", "httproute,grpcroute", "--all", "--ignore-not-found")
	kubectl(t, "patch", "mesh", "default", "--type=merge", "-p",
		fmt.Sprintf(`{"spec":{"telemetry":{"tracing":{"endpoint":%q,"samplingPercent":100}}}}`, sink.Addr))
	defer kubectl(t, "patch", "mesh", "default", "--type=json", "-p", `[{"op":"remove","path":"/spec/telemetry/tracing"}]`)
	// Proxies read the Mesh's telemetry when their pod is injected.
	kubectl(t, "-n", meshedNamespace, "rollout", "restart", "deployment")
	for _, d := range []string{"temperature-api", "converter-v1", "converter-v2"} {
		kubectl(t, "-n", meshedNamespace, "rollout", "status", "deployment/"+d, "--timeout=180s")
	}
	waitForAnswer(t, meshedNamespace)

	deadline := time.Now().Add(60 * time.Second)
	for {
		client, server, joined := joined(sink)
		if joined >= 5 {
			t.Logf("the receiver has %d client spans of the API and %d server spans of the converters, %d of them joined", client, server, joined)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a minute the receiver has %d client spans of the API and %d server spans of the converters, %d joined; want 5 joined", client, server, joined)
		}
		// Calls from this node: the API's proxy starts a trace for each.
		waitForAnswer(t, meshedNamespace)
		time.Sleep(500 * time.Millisecond)
	}
}
