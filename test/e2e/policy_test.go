//go:build e2e

package e2e

import (
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
	var res loadgenResult
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, _ = parseLoadgen(t, runLoadgenJob(t, meshedNamespace, "intruder", "http://converter:9090/", "10", "1s"))
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
