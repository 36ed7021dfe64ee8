//go:build e2e

package e2e

import (
	"testing"
)

// converterCanary splits the API's calls to the converter 80/20 between
// its two versions.
const converterCanary = `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: converter-canary
  namespace: ` + meshedNamespace + `
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: converter
    port: 9090
  rules:
  - backendRefs:
    - name: converter-v1
      port: 9090
      weight: 80
    - name: converter-v2
      port: 9090
      weight: 20
`

// TestGRPCRouteSplitsTheConverterCalls: with an 80/20 GRPCRoute on the
// converter, the API's proxy sends 80% of its calls to v1, within 5
// points over 1000 requests, measured by the load generator from the
// answers (each names its converter's version).
func TestGRPCRouteSplitsTheConverterCalls(t *testing.T) {
	kubectlApply(t, converterCanary)
	if out, err := kubectlErr("-n", meshedNamespace, "wait", "grpcroute/converter-canary",
		`--for=jsonpath={.status.parents[0].conditions[?(@.type=="Accepted")].status}=True`, "--timeout=60s"); err != nil {
		t.Fatalf("the route was not accepted: %v %s", err, out)
	}
	waitForAnswer(t, meshedNamespace)
	res := loadgenSucceeded(t, runLoadgenJob(t, meshedNamespace, "loadgen", "http://temperature-api:8080/temperature?city=Oslo&unit=F", "100", "10s"))
	v1, v2 := res.ByConverter["v1"], res.ByConverter["v2"]
	share := float64(v1) / float64(v1+v2)
	t.Logf("%d requests: v1 answered %d, v2 %d (v1 share %.3f)", res.Total, v1, v2, share)
	if res.Total < 950 || share < 0.75 || share > 0.85 {
		t.Errorf("v1 answered %.3f of %d calls (v1 %d, v2 %d): want 0.80 ± 0.05 over about 1000", share, v1+v2, v1, v2)
	}
}

// TestRoutesGetTheirStatusFromTheControlPlane: GAMMA routes in a meshed
// namespace are read by the Mesh's control plane, which says so in their
// status, as the Gateway API defines it for meshes.
func TestRoutesGetTheirStatusFromTheControlPlane(t *testing.T) {
	kubectlApply(t, converterCanary+`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: temperature-missing-backend
  namespace: `+meshedNamespace+`
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: temperature-api
    port: 8080
  rules:
  - backendRefs:
    - name: nowhere
      port: 8080
`)
	waitFor := func(resource, jsonpath, want string) {
		t.Helper()
		if out, err := kubectlErr("-n", meshedNamespace, "wait", resource, "--for=jsonpath="+jsonpath+"="+want, "--timeout=60s"); err != nil {
			t.Errorf("%s: %s is not %s: %v %s\n%s", resource, jsonpath, want, err, out,
				kubectl(t, "-n", meshedNamespace, "get", resource, "-o", "jsonpath={.status}"))
		}
	}
	waitFor("grpcroute/converter-canary", `{.status.parents[0].conditions[?(@.type=="Accepted")].status}`, "True")
	waitFor("grpcroute/converter-canary", `{.status.parents[0].conditions[?(@.type=="ResolvedRefs")].status}`, "True")
	waitFor("grpcroute/converter-canary", `{.status.parents[0].controllerName}`, "trellis.dev/mesh-controller")
	waitFor("httproute/temperature-missing-backend", `{.status.parents[0].conditions[?(@.type=="ResolvedRefs")].reason}`, "BackendNotFound")
}
