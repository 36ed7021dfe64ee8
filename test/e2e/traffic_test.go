//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// The traffic tests drive the converter's HTTP side (GET /convert) from
// meshed load generator Jobs: the routing, retries, timeouts and ejections
// happen in each Job's own proxy, as for any meshed client.

const convertPath = "/convert?celsius=21.5&unit=F"

// converterWorkload is a Deployment of the sample converter in the meshed
// namespace, labeled app=name plus labels, with env (NAME=value) for its
// failure and delay injection.
func converterWorkload(name string, labels map[string]string, env ...string) string {
	var lb, ev strings.Builder
	for k, v := range labels {
		fmt.Fprintf(&lb, "\n        %s: %q", k, v)
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&ev, "\n        - name: %s\n          value: %q", k, v)
	}
	return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: ` + name + `
  namespace: ` + meshedNamespace + `
spec:
  replicas: 1
  selector:
    matchLabels:
      app: ` + name + `
  template:
    metadata:
      labels:
        app: ` + name + lb.String() + `
    spec:
      serviceAccountName: converter
      containers:
      - name: converter
        image: ghcr.io/trellis-mesh/sample-converter:v0.1.0
        imagePullPolicy: IfNotPresent
        command: ["/usr/local/bin/converter"]
        env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name` + ev.String() + `
        ports:
        - name: http
          containerPort: 8080
        readinessProbe:
          httpGet:
            path: /healthz
            port: 8080
          periodSeconds: 2
`
}

// httpService is a Service of the converters' HTTP port selecting
// key=value.
func httpService(name, key, value string) string {
	return `apiVersion: v1
kind: Service
metadata:
  name: ` + name + `
  namespace: ` + meshedNamespace + `
spec:
  selector:
    ` + key + `: ` + value + `
  ports:
  - name: http
    port: 8080
    targetPort: http
    appProtocol: http
`
}

// deploy applies manifests, waits for the Deployments to be ready with
// their sidecars, and deletes everything when the test ends.
func deploy(t *testing.T, deployments []string, manifests ...string) {
	t.Helper()
	all := strings.Join(manifests, "---\n")
	kubectlApply(t, all)
	t.Cleanup(func() {
		for _, d := range deployments {
			kubectl(t, "-n", meshedNamespace, "delete", "deployment", d, "--ignore-not-found")
		}
	})
	for _, d := range deployments {
		if out, err := kubectlErr("-n", meshedNamespace, "rollout", "status", "deployment/"+d, "--timeout=180s"); err != nil {
			t.Log(kubectlErr("-n", meshedNamespace, "describe", "pods", "-l", "app="+d))
			t.Fatalf("deployment %s not ready: %v %s", d, err, out)
		}
	}
}

// waitAccepted waits for the control plane to accept a route or policy.
func waitAccepted(t *testing.T, namespace, resource, jsonpath string) {
	t.Helper()
	if out, err := kubectlErr("-n", namespace, "wait", resource,
		"--for=jsonpath="+jsonpath+"=True", "--timeout=60s"); err != nil {
		t.Fatalf("%s was not accepted: %v %s\n%s", resource, err, out,
			kubectl(t, "-n", namespace, "get", resource, "-o", "jsonpath={.status}"))
	}
}

const routeAccepted = `{.status.parents[0].conditions[?(@.type=="Accepted")].status}`

// inboundRequests is how many HTTP requests the proxies of the pods
// labeled app=app have answered, by their metrics.
func inboundRequests(t *testing.T, app string) float64 {
	t.Helper()
	var n float64
	for _, ip := range strings.Fields(kubectl(t, "-n", meshedNamespace, "get", "pods", "-l", "app="+app, "-o", "jsonpath={.items[*].status.podIP}")) {
		n += metricSum(httpGet(t, "http://"+ip+":15020/metrics"), `trellis_proxy_http_responses_total\{direction="inbound"[^}]*\}`)
	}
	return n
}

// TestHTTPRouteSplitsAndMatchesHeaders: an HTTPRoute on the converter's
// HTTP port sends the requests with x-canary: true to v2, and splits the
// others 80/20 between v1 and v2, within 5 points over 1000 requests.
func TestHTTPRouteSplitsAndMatchesHeaders(t *testing.T) {
	kubectlApply(t, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: converter-http
  namespace: `+meshedNamespace+`
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: converter
    port: 8080
  rules:
  - matches:
    - headers:
      - name: x-canary
        value: "true"
    backendRefs:
    - name: converter-v2
      port: 8080
  - backendRefs:
    - name: converter-v1
      port: 8080
      weight: 80
    - name: converter-v2
      port: 8080
      weight: 20
`)
	waitAccepted(t, meshedNamespace, "httproute/converter-http", routeAccepted)
	url := "http://converter:8080" + convertPath

	res := loadgenSucceeded(t, runLoadgenJob(t, meshedNamespace, "loadgen-split", url, "100", "10s"))
	v1, v2 := res.ByConverter["v1"], res.ByConverter["v2"]
	share := float64(v1) / float64(v1+v2)
	t.Logf("split: %d requests, v1 answered %d, v2 %d (v1 share %.3f)", res.Total, v1, v2, share)
	if res.Total < 950 || share < 0.75 || share > 0.85 {
		t.Errorf("v1 answered %.3f of %d requests (v1 %d, v2 %d): want 0.80 ± 0.05 over about 1000", share, v1+v2, v1, v2)
	}

	canary := loadgenSucceeded(t, runLoadgenJob(t, meshedNamespace, "loadgen-canary", url, "20", "3s", "--header=x-canary:true"))
	t.Logf("x-canary: true: %d requests, answered by %v", canary.Total, canary.ByConverter)
	if canary.ByConverter["v2"] != canary.Total {
		t.Errorf("with x-canary: true, answers by version %v of %d requests: want all from v2", canary.ByConverter, canary.Total)
	}
}

// TestRetriesHideAFailingConverterWithinTheBudget: a converter that fails
// every second request is hidden by a route's retries at a low rate; at a
// high rate the retry budget (20% of the requests plus 10 per second, over
// 10 seconds) caps the extra load the retries put on it, as the converter's
// own proxy counts it.
func TestRetriesHideAFailingConverterWithinTheBudget(t *testing.T) {
	deploy(t, []string{"converter-flaky"},
		converterWorkload("converter-flaky", nil, "FAIL_PERCENT=50"),
		httpService("converter-flaky", "app", "converter-flaky"))
	url := "http://converter-flaky:8080" + convertPath

	without, _ := parseLoadgen(t, runLoadgenJob(t, meshedNamespace, "loadgen-flaky", url, "10", "5s"))
	t.Logf("without retries: %d requests, success rate %.3f", without.Total, without.SuccessRate)
	if without.SuccessRate < 0.4 || without.SuccessRate > 0.6 {
		t.Fatalf("without retries, success rate %.3f (%v): want about half", without.SuccessRate, without.ByStatusCode)
	}

	kubectlApply(t, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: converter-flaky-retries
  namespace: `+meshedNamespace+`
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: converter-flaky
    port: 8080
  rules:
  - backendRefs:
    - name: converter-flaky
      port: 8080
    retry:
      codes: [503]
      attempts: 2
      backoff: 10ms
`)
	waitAccepted(t, meshedNamespace, "httproute/converter-flaky-retries", routeAccepted)

	low := loadgenSucceeded(t, runLoadgenJob(t, meshedNamespace, "loadgen-flaky", url, "5", "10s"))
	t.Logf("with retries, 5 req/s: %d requests, success rate %.3f", low.Total, low.SuccessRate)

	// 100 requests a second for 8 s: half fail at first, far more retries
	// than the budget's 20% + 10/s allow. The budget is a rolling window of
	// 10 one-second steps: a run of 8 s (and its last answers) stays within
	// one window, which bounds all its retries at once; over a longer run,
	// the retries of its first seconds would leave the window and make room
	// for more.
	served := inboundRequests(t, "converter-flaky")
	high, _ := parseLoadgen(t, runLoadgenJob(t, meshedNamespace, "loadgen-flaky", url, "100", "8s"))
	retries := inboundRequests(t, "converter-flaky") - served - float64(high.Total)
	budget := 0.2*float64(high.Total) + 10*10
	t.Logf("with retries, 100 req/s: %d requests, success rate %.3f, %v retries reached the converter (budget %v: %.0f%% extra load)",
		high.Total, high.SuccessRate, retries, budget, 100*retries/float64(high.Total))
	// The readiness probes do not go through the inbound path; a few
	// requests of slack cover the window's one-second steps.
	if retries > budget+5 {
		t.Errorf("%v retries reached the converter for %d requests: the budget allows %v", retries, high.Total, budget)
	}
	if retries < 0.5*budget {
		t.Errorf("%v retries for %d requests half of which failed: want the budget (%v) mostly used", retries, high.Total, budget)
	}
	if high.SuccessRate > 0.95 || high.SuccessRate <= without.SuccessRate {
		t.Errorf("success rate %.3f at 100 req/s (%.3f without retries): want better than without, but not all hidden, since the budget caps the retries", high.SuccessRate, without.SuccessRate)
	}
}

// TestRouteTimeoutCutsASlowConverter: a converter that takes a second to
// answer is cut at the route's 200 ms request timeout with a 504 from the
// client's proxy.
func TestRouteTimeoutCutsASlowConverter(t *testing.T) {
	deploy(t, []string{"converter-slow"},
		converterWorkload("converter-slow", nil, "DELAY=1s"),
		httpService("converter-slow", "app", "converter-slow"))
	url := "http://converter-slow:8080" + convertPath

	slow := loadgenSucceeded(t, runLoadgenJob(t, meshedNamespace, "loadgen-slow", url, "20", "3s", "--timeout=5s"))
	t.Logf("without a timeout: %d requests, p50 %.0f ms", slow.Total, slow.P50Ms)
	if slow.P50Ms < 1000 {
		t.Fatalf("p50 %.0f ms without a route timeout: the converter should take 1s", slow.P50Ms)
	}

	kubectlApply(t, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: converter-slow-timeout
  namespace: `+meshedNamespace+`
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: converter-slow
    port: 8080
  rules:
  - backendRefs:
    - name: converter-slow
      port: 8080
    timeouts:
      request: 200ms
`)
	waitAccepted(t, meshedNamespace, "httproute/converter-slow-timeout", routeAccepted)
	cut, line := parseLoadgen(t, runLoadgenJob(t, meshedNamespace, "loadgen-slow", url, "20", "3s", "--timeout=5s"))
	t.Logf("with a 200ms route timeout: %s", line)
	if cut.Total < 40 || cut.ByStatusCode["504"] != cut.Total {
		t.Errorf("answers %v of %d: want every request cut with 504", cut.ByStatusCode, cut.Total)
	}
	if cut.P99Ms < 190 || cut.P99Ms > 800 {
		t.Errorf("p99 %.0f ms: want the requests cut at about 200 ms, well before the converter's 1s", cut.P99Ms)
	}
}

// poolPolicy is a TrafficPolicy on converter-pool balancing round robin,
// so that each endpoint gets its turn whatever its latency, with outlier.
func poolPolicy(name, outlier string) string {
	return `apiVersion: mesh.trellis.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: ` + name + `
  namespace: ` + meshedNamespace + `
spec:
  targetRefs:
  - group: ""
    kind: Service
    name: converter-pool
  loadBalancer: RoundRobin
` + outlier
}

// TestFailingEndpointIsEjected: of a Service's two endpoints, one fails
// every request. Balanced round robin, half the requests fail; with a
// TrafficPolicy's outlier detection, the client's proxy ejects the failing
// endpoint after its three failures in a row, and the traffic recovers.
// (Round robin makes the failing endpoint's turns certain: the default
// latency-aware balancer may pick it once and then, its estimate set by
// the healthy endpoint's answers, rarely again, or favour it, since its
// failures are the fastest answers; see the notes.)
func TestFailingEndpointIsEjected(t *testing.T) {
	pool := map[string]string{"pool": "converter-pool"}
	deploy(t, []string{"converter-pool-healthy", "converter-pool-broken"},
		converterWorkload("converter-pool-healthy", pool),
		converterWorkload("converter-pool-broken", pool, "FAIL_PERCENT=100"),
		httpService("converter-pool", "pool", "converter-pool"))
	url := "http://converter-pool:8080" + convertPath
	policy := func(name, outlier string) {
		t.Helper()
		kubectlApply(t, poolPolicy(name, outlier))
		t.Cleanup(func() {
			kubectl(t, "-n", meshedNamespace, "delete", "trafficpolicy", name, "--ignore-not-found")
		})
		waitAccepted(t, meshedNamespace, "trafficpolicy/"+name, `{.status.conditions[?(@.type=="Accepted")].status}`)
	}

	policy("converter-pool", "")
	before, _ := parseLoadgen(t, runLoadgenJob(t, meshedNamespace, "loadgen-pool", url, "20", "5s"))
	t.Logf("without outlier detection: %d requests, success rate %.3f", before.Total, before.SuccessRate)
	if before.SuccessRate < 0.4 || before.SuccessRate > 0.6 {
		t.Fatalf("success rate %.3f balanced round robin without outlier detection (%v): want about half", before.SuccessRate, before.ByStatusCode)
	}

	// The same policy with outlier detection (a new one: the control plane
	// must not still hold the old when the load generator asks).
	kubectl(t, "-n", meshedNamespace, "delete", "trafficpolicy", "converter-pool", "--wait")
	policy("converter-pool-outlier", `  outlierDetection:
    consecutiveErrors: 3
    baseEjectionTime: 60s
    maxEjectionPercent: 50
`)
	after, line := parseLoadgen(t, runLoadgenJob(t, meshedNamespace, "loadgen-pool", url, "20", "10s"))
	t.Logf("with outlier detection: %s", line)
	// Three failures in a row eject it; requests already in flight to it
	// may fail too.
	if failed := after.Total - after.Successes; after.Total < 190 || failed < 3 || failed > 6 {
		t.Errorf("%d of %d requests failed (%v): want the broken endpoint ejected after its 3 failures in a row", failed, after.Total, after.ByStatusCode)
	}
	logs := kubectl(t, "-n", meshedNamespace, "logs", "job/loadgen-pool", "-c", "trellis-proxy")
	if !strings.Contains(logs, "endpoint ejected") {
		t.Errorf("the load generator's proxy did not log the ejection:\n%s", logs)
	}
}

// TestConsumerRouteAppliesToItsNamespaceOnly: a route in a client's
// namespace on the converter Service of another namespace (a consumer
// route) governs that namespace's calls, sending them all to v2, while the
// converter's own namespace keeps its producer route's split.
func TestConsumerRouteAppliesToItsNamespaceOnly(t *testing.T) {
	const consumer = "temperature-consumer"
	kubectlApply(t, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+consumer+"\n  labels:\n    trellis-injection: enabled\n")
	t.Cleanup(func() { kubectl(t, "delete", "namespace", consumer, "--ignore-not-found", "--wait=false") })
	kubectlApply(t, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: converter-v2-only
  namespace: `+consumer+`
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: converter
    namespace: `+meshedNamespace+`
    port: 8080
  rules:
  - backendRefs:
    - name: converter-v2
      namespace: `+meshedNamespace+`
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata:
  name: consumer-routes
  namespace: `+meshedNamespace+`
spec:
  from:
  - group: gateway.networking.k8s.io
    kind: HTTPRoute
    namespace: `+consumer+`
  to:
  - group: ""
    kind: Service
`)
	t.Cleanup(func() {
		kubectl(t, "-n", meshedNamespace, "delete", "referencegrant", "consumer-routes", "--ignore-not-found")
	})
	waitAccepted(t, consumer, "httproute/converter-v2-only", routeAccepted)
	url := "http://converter." + meshedNamespace + ":8080" + convertPath

	theirs := loadgenSucceeded(t, runLoadgenJob(t, consumer, "loadgen", url, "20", "3s"))
	t.Logf("from %s: answered by %v", consumer, theirs.ByConverter)
	if theirs.ByConverter["v2"] != theirs.Total {
		t.Errorf("calls from %s answered by %v of %d: want all from v2, as its consumer route says", consumer, theirs.ByConverter, theirs.Total)
	}
	ours := loadgenSucceeded(t, runLoadgenJob(t, meshedNamespace, "loadgen", url, "20", "3s"))
	t.Logf("from %s: answered by %v", meshedNamespace, ours.ByConverter)
	if ours.ByConverter["v1"] == 0 {
		t.Errorf("calls from %s answered by %v: want v1 among them, as the producer route splits them", meshedNamespace, ours.ByConverter)
	}
}
