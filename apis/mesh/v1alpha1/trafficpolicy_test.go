package v1alpha1_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
)

const trafficPolicyKind = "TrafficPolicy"

// TestTrafficPolicyRefused: each bad spec is refused, and the error names
// the field and, where a CEL rule speaks, the fix.
func TestTrafficPolicyRefused(t *testing.T) {
	cases := map[string]struct {
		spec string // YAML, as a user writes it
		// want are substrings the API server's error must contain.
		want []string
	}{
		"no targets": {
			`loadBalancer: RoundRobin`,
			[]string{"spec.targetRefs", "Required value"},
		},
		"empty targets": {
			`targetRefs: []`,
			[]string{"spec.targetRefs", "at least 1 items"},
		},
		"seventeen targets": {
			"targetRefs:\n" + targets(17),
			[]string{"spec.targetRefs", "must have at most 16 items"},
		},
		"the same Service twice": {
			`targetRefs: [{name: converter}, {group: "", kind: Service, name: converter}]`,
			[]string{"spec.targetRefs[1]", "Duplicate value"},
		},
		"a Deployment": {
			`targetRefs: [{group: apps, kind: Deployment, name: converter-v1}]`,
			[]string{"spec.targetRefs[0].kind", "must be Service", "target the Service in front of it",
				"spec.targetRefs[0].group", `must be "" (the core API group)`},
		},
		"a Gateway API Service-like kind": {
			`targetRefs: [{group: gateway.networking.k8s.io, kind: Service, name: converter}]`,
			[]string{"spec.targetRefs[0].group", `must be ""`},
		},
		"a Service name that is not a DNS label": {
			`targetRefs: [{name: Converter.v1}]`,
			[]string{"spec.targetRefs[0].name"},
		},
		"no name": {
			`targetRefs: [{kind: Service}]`,
			[]string{"spec.targetRefs[0].name", "Required value"},
		},
		"unknown load balancer": {
			`{targetRefs: [{name: converter}], loadBalancer: Maglev}`,
			[]string{"spec.loadBalancer", "LeastRequest", "RoundRobin", "Random"},
		},
		"zero connect timeout": {
			`{targetRefs: [{name: converter}], connectTimeout: 0s}`,
			[]string{"spec.connectTimeout", "must be between 1ms and 1h"},
		},
		"connect timeout over an hour": {
			`{targetRefs: [{name: converter}], connectTimeout: 61m}`,
			[]string{"spec.connectTimeout", "must be between 1ms and 1h"},
		},
		"connect timeout that is not a duration": {
			`{targetRefs: [{name: converter}], connectTimeout: ten seconds}`,
			[]string{"spec.connectTimeout", "such as 10s"},
		},
		"negative request timeout": {
			`{targetRefs: [{name: converter}], requestTimeout: -1s}`,
			[]string{"spec.requestTimeout", "must be between 1ms and 24h", "unset it for no timeout"},
		},
		"request timeout over a day": {
			`{targetRefs: [{name: converter}], requestTimeout: 25h}`,
			[]string{"spec.requestTimeout", "must be between 1ms and 24h"},
		},
		"zero connections": {
			`{targetRefs: [{name: converter}], connectionLimits: {maxConnections: 0}}`,
			[]string{"spec.connectionLimits.maxConnections", "greater than or equal to 1"},
		},
		"zero pending requests": {
			`{targetRefs: [{name: converter}], connectionLimits: {maxPendingRequests: 0}}`,
			[]string{"spec.connectionLimits.maxPendingRequests"},
		},
		"zero consecutive errors": {
			`{targetRefs: [{name: converter}], outlierDetection: {consecutiveErrors: 0}}`,
			[]string{"spec.outlierDetection.consecutiveErrors", "greater than or equal to 1"},
		},
		"too many consecutive errors": {
			`{targetRefs: [{name: converter}], outlierDetection: {consecutiveErrors: 1001}}`,
			[]string{"spec.outlierDetection.consecutiveErrors", "less than or equal to 1000"},
		},
		"review interval too short": {
			`{targetRefs: [{name: converter}], outlierDetection: {interval: 10ms}}`,
			[]string{"spec.outlierDetection.interval", "must be between 100ms and 10m"},
		},
		"ejection time too long": {
			`{targetRefs: [{name: converter}], outlierDetection: {baseEjectionTime: 2h}}`,
			[]string{"spec.outlierDetection.baseEjectionTime", "must be between 1s and 1h"},
		},
		"ejecting more than all": {
			`{targetRefs: [{name: converter}], outlierDetection: {maxEjectionPercent: 101}}`,
			[]string{"spec.outlierDetection.maxEjectionPercent", "less than or equal to 100"},
		},
		"negative ejection percent": {
			`{targetRefs: [{name: converter}], outlierDetection: {maxEjectionPercent: -1}}`,
			[]string{"spec.outlierDetection.maxEjectionPercent"},
		},
		"retry budget over 100 percent": {
			`{targetRefs: [{name: converter}], retryBudget: {percent: 150}}`,
			[]string{"spec.retryBudget.percent", "less than or equal to 100"},
		},
		"negative minimum retries": {
			`{targetRefs: [{name: converter}], retryBudget: {minRetriesPerSecond: -1}}`,
			[]string{"spec.retryBudget.minRetriesPerSecond"},
		},
		"unknown field": {
			`{targetRefs: [{name: converter}], loadBalancing: RoundRobin}`,
			[]string{"loadBalancing"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			checkRefused(t, trafficPolicyKind, tc.spec, tc.want)
		})
	}
}

// TestTrafficPolicyDefaulted: valid specs are accepted and stored with the
// defaults that the API documents filled in.
func TestTrafficPolicyDefaulted(t *testing.T) {
	cases := map[string]struct {
		spec string // YAML, as a user writes it
		want string // the stored spec
	}{
		"only a target": {
			spec: `targetRefs: [{name: converter}]`,
			want: `
targetRefs: [{group: "", kind: Service, name: converter}]
loadBalancer: LeastRequest
connectTimeout: 10s
`,
		},
		"Gateway API style target": {
			spec: `targetRefs: [{group: "", kind: Service, name: converter}]`,
			want: `
targetRefs: [{group: "", kind: Service, name: converter}]
loadBalancer: LeastRequest
connectTimeout: 10s
`,
		},
		"empty outlier detection and retry budget take their defaults": {
			spec: `
targetRefs: [{name: converter-v1}, {name: converter-v2}]
outlierDetection: {}
retryBudget: {}
connectionLimits: {}
`,
			want: `
targetRefs: [{group: "", kind: Service, name: converter-v1}, {group: "", kind: Service, name: converter-v2}]
loadBalancer: LeastRequest
connectTimeout: 10s
outlierDetection: {consecutiveErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
retryBudget: {percent: 20, minRetriesPerSecond: 10}
connectionLimits: {}
`,
		},
		"every field at its bounds": {
			spec: `
targetRefs: [{name: temperature-api}]
loadBalancer: Random
connectTimeout: 1ms
requestTimeout: 24h
connectionLimits: {maxConnections: 1, maxPendingRequests: 2147483647}
outlierDetection: {consecutiveErrors: 1000, interval: 100ms, baseEjectionTime: 1h, maxEjectionPercent: 0}
retryBudget: {percent: 0, minRetriesPerSecond: 0}
`,
			want: `
targetRefs: [{group: "", kind: Service, name: temperature-api}]
loadBalancer: Random
connectTimeout: 1ms
requestTimeout: 24h
connectionLimits: {maxConnections: 1, maxPendingRequests: 2147483647}
outlierDetection: {consecutiveErrors: 1000, interval: 100ms, baseEjectionTime: 1h, maxEjectionPercent: 0}
retryBudget: {percent: 0, minRetriesPerSecond: 0}
`,
		},
		"sixteen targets": {
			spec: "targetRefs:\n" + targets(16),
			want: "targetRefs:\n" + strings.ReplaceAll(targets(16), "- name:", "- group: \"\"\n  kind: Service\n  name:") +
				"loadBalancer: LeastRequest\nconnectTimeout: 10s\n",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			checkDefaulted(t, trafficPolicyKind, tc.spec, tc.want)
		})
	}
}

// targets is a YAML list of n Service targets, by name only.
func targets(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "- name: svc-%d\n", i)
	}
	return b.String()
}

// TestTrafficPolicyGoClient: a policy built with the Go types, leaving out
// what has a default, round-trips with the defaults in the typed fields, and
// its status (Accepted, observedGeneration) can be written.
func TestTrafficPolicyGoClient(t *testing.T) {
	tp := &meshv1.TrafficPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "converter", Namespace: testNamespace},
		Spec: meshv1.TrafficPolicySpec{
			TargetRefs:       []meshv1.LocalPolicyTargetReference{{Name: "converter"}},
			RequestTimeout:   &metav1.Duration{Duration: 3 * time.Second},
			OutlierDetection: &meshv1.OutlierDetection{},
		},
	}
	if err := k8sClient.Create(testCtx, tp); err != nil {
		t.Fatal(err)
	}
	ref := tp.Spec.TargetRefs[0]
	if ref.Group != "" || ref.Kind != "Service" {
		t.Errorf("targetRefs[0] = %+v, want group \"\" and kind Service", ref)
	}
	if tp.Spec.LoadBalancer != meshv1.LoadBalancerLeastRequest {
		t.Errorf("loadBalancer = %q, want %q", tp.Spec.LoadBalancer, meshv1.LoadBalancerLeastRequest)
	}
	if tp.Spec.ConnectTimeout.Duration != 10*time.Second {
		t.Errorf("connectTimeout = %v, want 10s", tp.Spec.ConnectTimeout.Duration)
	}
	od := tp.Spec.OutlierDetection
	if od.ConsecutiveErrors == nil || *od.ConsecutiveErrors != 5 || od.MaxEjectionPercent == nil || *od.MaxEjectionPercent != 50 ||
		od.Interval.Duration != 10*time.Second || od.BaseEjectionTime.Duration != 30*time.Second {
		t.Errorf("outlierDetection = %+v, want the documented defaults", od)
	}
	if tp.Spec.RetryBudget != nil || tp.Spec.ConnectionLimits != nil {
		t.Errorf("unset retryBudget and connectionLimits were filled in: %+v %+v", tp.Spec.RetryBudget, tp.Spec.ConnectionLimits)
	}

	tp.Status = meshv1.TrafficPolicyStatus{
		ObservedGeneration: tp.Generation,
		Conditions: []metav1.Condition{{
			Type:               meshv1.AcceptedCondition,
			Status:             metav1.ConditionFalse,
			Reason:             meshv1.PolicyConflictedReason,
			Message:            "Service converter: TrafficPolicy older-one targets it and is older",
			ObservedGeneration: tp.Generation,
			LastTransitionTime: metav1.Now(),
		}},
	}
	if err := k8sClient.Status().Update(testCtx, tp); err != nil {
		t.Fatal(err)
	}
	got := &meshv1.TrafficPolicy{}
	if err := k8sClient.Get(testCtx, client.ObjectKeyFromObject(tp), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.ObservedGeneration != 1 || len(got.Status.Conditions) != 1 || got.Status.Conditions[0].Reason != meshv1.PolicyConflictedReason {
		t.Errorf("status = %+v, want observedGeneration 1 and the Conflicted condition", got.Status)
	}
	row := printedRow(t, "trafficpolicies", got.Name)
	for column, want := range map[string]string{"Accepted": "False", "Targets": "converter", "Load Balancer": "LeastRequest"} {
		if row[column] != want {
			t.Errorf("kubectl get -o wide column %s = %q, want %q", column, row[column], want)
		}
	}
}
