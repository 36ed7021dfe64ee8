package v1alpha1_test

import (
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
)

const authorizationPolicyKind = "AuthorizationPolicy"

// TestAuthorizationPolicyRefused: each bad or contradictory spec is refused,
// and the error names the field and, where a CEL rule speaks, the fix.
func TestAuthorizationPolicyRefused(t *testing.T) {
	cases := map[string]struct {
		spec string // YAML, as a user writes it
		// want are substrings the API server's error must contain.
		want []string
	}{
		"unknown action": {
			`action: Audit`,
			[]string{"spec.action", "Allow", "Deny"},
		},
		"Deny without rules, which would deny nothing": {
			`action: Deny`,
			[]string{"spec.rules", "a Deny policy needs at least one rule", "use action Allow with no rules"},
		},
		"Deny with an empty list of rules": {
			`{action: Deny, rules: []}`,
			[]string{"spec.rules", "a Deny policy needs at least one rule"},
		},
		"65 rules": {
			"rules:\n" + strings.Repeat("- to: [{ports: [8080]}]\n", 65),
			[]string{"spec.rules", "must have at most 64 items"},
		},
		"empty from list": {
			`rules: [{from: [], to: [{ports: [8080]}]}]`,
			[]string{"spec.rules[0].from", "at least 1 items"},
		},
		"empty to list": {
			`rules: [{from: [{namespaces: [temperature]}], to: []}]`,
			[]string{"spec.rules[0].to", "at least 1 items"},
		},
		"from entry that matches no one": {
			`rules: [{from: [{}]}]`,
			[]string{"spec.rules[0].from[0]", "exactly one of identities, namespaces and unauthenticated"},
		},
		"from entry with unauthenticated false only": {
			`rules: [{from: [{unauthenticated: false}]}]`,
			[]string{"spec.rules[0].from[0]", "exactly one of identities, namespaces and unauthenticated"},
		},
		"unauthenticated callers with identities": {
			`rules: [{from: [{unauthenticated: true, identities: ["spiffe://cluster.local/ns/temperature/sa/default"]}]}]`,
			[]string{"spec.rules[0].from[0]", "exactly one of", "list them as separate from entries"},
		},
		"identities and namespaces in one entry": {
			`rules: [{from: [{identities: ["spiffe://cluster.local/*"], namespaces: [temperature]}]}]`,
			[]string{"spec.rules[0].from[0]", "exactly one of"},
		},
		"empty identities": {
			`rules: [{from: [{identities: []}]}]`,
			[]string{"spec.rules[0].from[0].identities", "at least 1 items"},
		},
		"identity that is not a SPIFFE ID": {
			`rules: [{from: [{identities: ["cluster.local/ns/temperature/sa/default"]}]}]`,
			[]string{"spec.rules[0].from[0].identities[0]", "must be a SPIFFE ID starting with spiffe://"},
		},
		"a star that is not last": {
			`rules: [{from: [{identities: ["spiffe://cluster.local/ns/*/sa/default"]}]}]`,
			[]string{"spec.rules[0].from[0].identities[0]", "may hold * only as its last character"},
		},
		"a bare star": {
			`rules: [{from: [{identities: ["*"]}]}]`,
			[]string{"spec.rules[0].from[0].identities[0]"},
		},
		"the same identity twice": {
			`rules: [{from: [{identities: ["spiffe://cluster.local/*", "spiffe://cluster.local/*"]}]}]`,
			[]string{"spec.rules[0].from[0].identities[1]", "Duplicate value"},
		},
		"seventeen identities": {
			`rules: [{from: [{identities: [` + spiffeIDs(17) + `]}]}]`,
			[]string{"spec.rules[0].from[0].identities", "must have at most 16 items"},
		},
		"namespace that is not a DNS label": {
			`rules: [{from: [{namespaces: [Temperature_NS]}]}]`,
			[]string{"spec.rules[0].from[0].namespaces[0]"},
		},
		"to entry that matches nothing": {
			`rules: [{to: [{}]}]`,
			[]string{"spec.rules[0].to[0]", "at least one of ports, paths and methods", "leave to out of the rule"},
		},
		"port zero": {
			`rules: [{to: [{ports: [0]}]}]`,
			[]string{"spec.rules[0].to[0].ports[0]", "greater than or equal to 1"},
		},
		"port above 65535": {
			`rules: [{to: [{ports: [65536]}]}]`,
			[]string{"spec.rules[0].to[0].ports[0]", "less than or equal to 65535"},
		},
		"relative path": {
			`rules: [{to: [{paths: ["temperature"]}]}]`,
			[]string{"spec.rules[0].to[0].paths[0]", "must start with /"},
		},
		"star inside a path": {
			`rules: [{to: [{paths: ["/api/*/items"]}]}]`,
			[]string{"spec.rules[0].to[0].paths[0]", "may hold * only as its last character", "/api/*"},
		},
		"path with a query": {
			`rules: [{to: [{paths: ["/temperature?city=Oslo"]}]}]`,
			[]string{"spec.rules[0].to[0].paths[0]", "without the query string"},
		},
		"lower-case method": {
			`rules: [{to: [{methods: [get]}]}]`,
			[]string{"spec.rules[0].to[0].methods[0]", "GET", "POST"},
		},
		"the same method twice": {
			`rules: [{to: [{methods: [GET, GET]}]}]`,
			[]string{"spec.rules[0].to[0].methods[1]", "Duplicate value"},
		},
		"unknown selector operator": {
			`selector: {matchExpressions: [{key: app, operator: Equals, values: [converter]}]}`,
			[]string{"spec.selector", "operator must be In, NotIn, Exists or DoesNotExist"},
		},
		"In without values": {
			`selector: {matchExpressions: [{key: app, operator: In}]}`,
			[]string{"spec.selector", "In or NotIn need values"},
		},
		"Exists with values": {
			`selector: {matchExpressions: [{key: app, operator: Exists, values: [converter]}]}`,
			[]string{"spec.selector", "Exists or DoesNotExist take none"},
		},
		"unknown field": {
			`{rules: [{from: [{principals: ["spiffe://cluster.local/*"]}]}]}`,
			[]string{"principals"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			checkRefused(t, authorizationPolicyKind, tc.spec, tc.want)
		})
	}
}

// spiffeIDs is n distinct SPIFFE IDs, as a YAML flow list's items.
func spiffeIDs(n int) string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("spiffe://cluster.local/ns/temperature/sa/sa-%d", i)
	}
	return strings.Join(ids, ", ")
}

// TestAuthorizationPolicyDefaulted: valid specs, including the idioms the
// API documents, are accepted and stored with their defaults filled in.
func TestAuthorizationPolicyDefaulted(t *testing.T) {
	cases := map[string]struct {
		spec string // YAML, as a user writes it
		want string // the stored spec
	}{
		"empty spec: the namespace's default of deny": {
			spec: `{}`,
			want: `action: Allow`,
		},
		"Allow with an empty list of rules, which also denies by default": {
			spec: `{action: Allow, rules: []}`,
			want: `{action: Allow, rules: []}`,
		},
		"Deny everything to some pods with the empty rule": {
			spec: `{action: Deny, selector: {matchLabels: {app: converter}}, rules: [{}]}`,
			want: `{action: Deny, selector: {matchLabels: {app: converter}}, rules: [{}]}`,
		},
		"allow every caller on one port": {
			spec: `rules: [{to: [{ports: [8080]}]}]`,
			want: `{action: Allow, rules: [{to: [{ports: [8080]}]}]}`,
		},
		"every kind of source and operation": {
			spec: `
selector:
  matchExpressions:
  - {key: app, operator: In, values: [converter]}
  - {key: canary, operator: DoesNotExist}
rules:
- from:
  - identities: ["spiffe://cluster.local/ns/temperature/sa/default", "spiffe://cluster.local/ns/shop/*", "spiffe://*"]
  - namespaces: [temperature, shop]
  - unauthenticated: true
  to:
  - ports: [9090]
    paths: [/trellis.sample.converter.v1.Converter/*, /grpc.health.v1.Health/Check]
    methods: [POST]
  - {ports: [1, 65535]}
`,
			want: `
action: Allow
selector:
  matchExpressions:
  - {key: app, operator: In, values: [converter]}
  - {key: canary, operator: DoesNotExist}
rules:
- from:
  - identities: ["spiffe://cluster.local/ns/temperature/sa/default", "spiffe://cluster.local/ns/shop/*", "spiffe://*"]
  - namespaces: [temperature, shop]
  - unauthenticated: true
  to:
  - ports: [9090]
    paths: [/trellis.sample.converter.v1.Converter/*, /grpc.health.v1.Health/Check]
    methods: [POST]
  - {ports: [1, 65535]}
`,
		},
		"64 rules, every method, a prefix of every path": {
			spec: "rules:\n" + strings.Repeat("- to: [{paths: [/*], methods: [GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH]}]\n", 64),
			want: "action: Allow\nrules:\n" + strings.Repeat("- to: [{paths: [/*], methods: [GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH]}]\n", 64),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			checkDefaulted(t, authorizationPolicyKind, tc.spec, tc.want)
		})
	}
}

// TestAuthorizationPolicyGoClient: a Go client that builds the empty policy
// (deny by default) gets it accepted, not refused for a missing spec, and
// its status and print columns work.
func TestAuthorizationPolicyGoClient(t *testing.T) {
	ap := &meshv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny-by-default", Namespace: testNamespace}}
	if err := k8sClient.Create(testCtx, ap); err != nil {
		t.Fatal(err)
	}
	if ap.Spec.Action != meshv1.AuthorizationActionAllow || ap.Spec.Selector != nil || len(ap.Spec.Rules) != 0 {
		t.Errorf("spec = %+v, want action Allow, no selector and no rules", ap.Spec)
	}

	ap.Status = meshv1.AuthorizationPolicyStatus{
		ObservedGeneration: ap.Generation,
		Conditions: []metav1.Condition{{
			Type:               meshv1.AcceptedCondition,
			Status:             metav1.ConditionTrue,
			Reason:             meshv1.PolicyAcceptedReason,
			Message:            "enforced by the proxies of 3 pods",
			ObservedGeneration: ap.Generation,
			LastTransitionTime: metav1.Now(),
		}},
	}
	if err := k8sClient.Status().Update(testCtx, ap); err != nil {
		t.Fatal(err)
	}
	got := &meshv1.AuthorizationPolicy{}
	if err := k8sClient.Get(testCtx, client.ObjectKeyFromObject(ap), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.ObservedGeneration != 1 || len(got.Status.Conditions) != 1 {
		t.Errorf("status = %+v, want observedGeneration 1 and one condition", got.Status)
	}
	row := printedRow(t, "authorizationpolicies", got.Name)
	for column, want := range map[string]string{"Action": "Allow", "Accepted": "True"} {
		if row[column] != want {
			t.Errorf("kubectl get column %s = %q, want %q", column, row[column], want)
		}
	}
}
