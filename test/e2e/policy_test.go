//go:build e2e

package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestAuthorizationPolicyOnTheCluster: an AuthorizationPolicy that admits
// only the temperature API's identity to the converter makes another
// meshed pod's calls fail with 403, answered by the converter's proxy,
// while the API keeps working.
func TestAuthorizationPolicyOnTheCluster(t *testing.T) {
	kubectlApply(t, `apiVersion: mesh.trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: converter-only-from-the-api
  namespace: `+meshedNamespace+`
spec:
  selector:
    matchLabels:
      app: converter
  action: Allow
  rules:
  - from:
    - identities: ["spiffe://cluster.local/ns/`+meshedNamespace+`/sa/temperature-api"]
`)
	defer kubectl(t, "-n", meshedNamespace, "delete", "authorizationpolicy", "converter-only-from-the-api", "--ignore-not-found")
	if out, err := kubectlErr("-n", meshedNamespace, "wait", "authorizationpolicy/converter-only-from-the-api",
		`--for=jsonpath={.status.conditions[?(@.type=="Accepted")].status}=True`, "--timeout=60s"); err != nil {
		t.Fatalf("the policy was not accepted: %v %s", err, out)
	}

	// A meshed Job (ServiceAccount default) calls the converter directly.
	var res struct {
		Total        int            `json:"total"`
		ByStatusCode map[string]int `json:"by_status_code"`
	}
	deadline := time.Now().Add(60 * time.Second)
	for attempt := 0; ; attempt++ {
		kubectl(t, "-n", meshedNamespace, "delete", "job", "intruder", "--ignore-not-found", "--wait")
		kubectl(t, "-n", meshedNamespace, "create", "job", "intruder", "--image=ghcr.io/trellis-mesh/sample-loadgen:v0.1.0", "--",
			"/usr/local/bin/loadgen", "--url=http://converter:9090/", "--rate=10", "--duration=1s")
		if out, err := kubectlErr("-n", meshedNamespace, "wait", "job/intruder", "--for=condition=Complete", "--timeout=120s"); err != nil {
			t.Log(kubectlErr("-n", meshedNamespace, "logs", "job/intruder", "--all-containers"))
			t.Fatalf("the intruder Job did not complete: %v %s", err, out)
		}
		logs := strings.TrimSpace(kubectl(t, "-n", meshedNamespace, "logs", "job/intruder"))
		if err := json.Unmarshal([]byte(logs[strings.LastIndex(logs, "\n")+1:]), &res); err != nil {
			t.Fatalf("load generator output %q: %v", logs, err)
		}
		if res.Total > 0 && res.ByStatusCode["403"] == res.Total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls to the converter from another identity: %v of %d, want all 403", res.ByStatusCode, res.Total)
		}
		time.Sleep(2 * time.Second) // the policy may not have reached the converters' proxies yet
	}

	// The API, whose identity the policy admits, still gets its answers.
	waitForAnswer(t, meshedNamespace)
	converters := strings.Fields(kubectl(t, "-n", meshedNamespace, "get", "pods", "-l", "app=converter", "-o", "jsonpath={.items[*].status.podIP}"))
	denied := 0.0
	for _, ip := range converters {
		denied += metricSum(httpGet(t, "http://"+ip+":15020/metrics"), `trellis_proxy_authorization_denied_total\{protocol="http",rule=""\}`)
	}
	if denied < float64(res.Total) {
		t.Errorf("the converters' proxies counted %v denials, want at least the %d calls refused", denied, res.Total)
	}
}
