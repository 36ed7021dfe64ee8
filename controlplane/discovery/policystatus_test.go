package discovery

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
)

func trafficPolicy(ns, name string, targets ...string) *meshv1.TrafficPolicy {
	tp := &meshv1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for _, t := range targets {
		tp.Spec.TargetRefs = append(tp.Spec.TargetRefs, meshv1.LocalPolicyTargetReference{Kind: "Service", Name: t})
	}
	return tp
}

// The Accepted condition of each TrafficPolicy, in an Index holding shop's
// Services web and api.
func TestTrafficPolicyAccepted(t *testing.T) {
	policy := func(name string, created int64, targets ...string) *meshv1.TrafficPolicy {
		tp := trafficPolicy("shop", name, targets...)
		tp.CreationTimestamp, tp.Generation = at(created), 3
		return tp
	}
	cases := map[string]struct {
		policies []*meshv1.TrafficPolicy
		// want is each policy's Accepted condition as "Status/Reason".
		want map[string]string
		// message holds a phrase of each named policy's message.
		message map[string]string
	}{
		"alone": {
			policies: []*meshv1.TrafficPolicy{policy("web", 100, "web", "api")},
			want:     map[string]string{"web": "True/Accepted"},
			message:  map[string]string{"web": "In force for Services web, api"},
		},
		"the older wins, whatever the names": {
			policies: []*meshv1.TrafficPolicy{policy("b-old", 100, "web"), policy("a-new", 200, "web")},
			want:     map[string]string{"b-old": "True/Accepted", "a-new": "False/Conflicted"},
			message:  map[string]string{"a-new": "TrafficPolicy b-old, older, is in force for Service web"},
		},
		"created in the same second: the first by name wins": {
			policies: []*meshv1.TrafficPolicy{policy("b", 100, "web"), policy("a", 100, "web")},
			want:     map[string]string{"a": "True/Accepted", "b": "False/Conflicted"},
		},
		"a conflicted policy is in force for its other targets": {
			policies: []*meshv1.TrafficPolicy{policy("old", 100, "web"), policy("new", 200, "web", "api")},
			want:     map[string]string{"old": "True/Accepted", "new": "False/Conflicted"},
			message:  map[string]string{"new": "In force for Service api"},
		},
		"a missing target": {
			policies: []*meshv1.TrafficPolicy{policy("lost", 100, "web", "gone")},
			want:     map[string]string{"lost": "False/TargetNotFound"},
			message:  map[string]string{"lost": "Service gone of namespace shop does not exist"},
		},
		"TargetNotFound wins over Conflicted": {
			policies: []*meshv1.TrafficPolicy{policy("old", 100, "web"), policy("new", 200, "web", "gone")},
			want:     map[string]string{"old": "True/Accepted", "new": "False/TargetNotFound"},
			message:  map[string]string{"new": "TrafficPolicy old, older, is in force for Service web"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ix := testIndex(t, service("shop", "api", servicePortSpec{name: "http", port: 80, target: 8080}))
			for _, p := range tc.policies {
				ix.Upsert(p)
			}
			for _, p := range tc.policies {
				obj := ix.policyStatusUpdate(policyKey{trafficPolicyKind, keyOf(p)})
				if obj == nil {
					t.Fatalf("no status to write for %s", p.Name)
				}
				st := obj.(*meshv1.TrafficPolicy).Status
				c := meta.FindStatusCondition(st.Conditions, meshv1.AcceptedCondition)
				if c == nil || st.ObservedGeneration != 3 || c.ObservedGeneration != 3 {
					t.Fatalf("%s: status %+v, want an Accepted condition and observedGeneration 3", p.Name, st)
				}
				if got := string(c.Status) + "/" + c.Reason; got != tc.want[p.Name] {
					t.Errorf("%s: Accepted is %s (%q), want %s", p.Name, got, c.Message, tc.want[p.Name])
				}
				if m := tc.message[p.Name]; !strings.Contains(c.Message, m) {
					t.Errorf("%s: message %q, want it to hold %q", p.Name, c.Message, m)
				}
			}
		})
	}
}

// A status that is already right is not written again, nor is a policy's
// outside the Mesh.
func TestPolicyStatusUnchanged(t *testing.T) {
	tp := trafficPolicy("shop", "web", "web")
	tp.Generation = 1
	ix := testIndex(t, tp, namespace("plain", false), trafficPolicy("plain", "web", "web"))
	obj := ix.policyStatusUpdate(policyKey{trafficPolicyKind, keyOf(tp)})
	if obj == nil {
		t.Fatal("no status to write for a new policy")
	}
	ix.Upsert(obj)
	if again := ix.policyStatusUpdate(policyKey{trafficPolicyKind, keyOf(tp)}); again != nil {
		t.Errorf("status written again: %+v", again.(*meshv1.TrafficPolicy).Status)
	}
	if other := ix.policyStatusUpdate(policyKey{trafficPolicyKind, objKey{"plain", "web"}}); other != nil {
		t.Errorf("status written for a policy outside the Mesh: %+v", other.(*meshv1.TrafficPolicy).Status)
	}
}

func TestAuthorizationPolicyAccepted(t *testing.T) {
	broken := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}}
	cases := map[string]struct {
		spec meshv1.AuthorizationPolicySpec
		want string // status/reason
	}{
		"selects all":          {spec: meshv1.AuthorizationPolicySpec{}, want: "True/Accepted"},
		"selects some":         {spec: meshv1.AuthorizationPolicySpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}, want: "True/Accepted"},
		"broken Allow":         {spec: meshv1.AuthorizationPolicySpec{Selector: broken}, want: "False/Invalid"},
		"broken Deny selector": {spec: meshv1.AuthorizationPolicySpec{Selector: broken, Action: meshv1.AuthorizationActionDeny}, want: "False/Invalid"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := authorizationPolicyAccepted(&meshv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "p", Generation: 2}, Spec: tc.spec})
			if got := string(c.Status) + "/" + c.Reason; got != tc.want || c.ObservedGeneration != 2 {
				t.Errorf("Accepted is %s, generation %d (%q); want %s, generation 2", got, c.ObservedGeneration, c.Message, tc.want)
			}
		})
	}
}

// The elected StatusWriter writes policies' status through the API server,
// and rewrites it as the policies and their targets change.
func TestPolicyStatus(t *testing.T) {
	h := start(t, harnessOptions{status: true})
	ns := meshedNamespace(t, h.c, "policy")
	create(t, h.c, service(ns, "web", servicePortSpec{name: "http", port: 80, target: 8080}))
	// Older by creation time, and last by name, so that only its age can
	// make it win.
	create(t, h.c, trafficPolicy(ns, "b-old", "web"))
	time.Sleep(1100 * time.Millisecond) // creation timestamps are in seconds
	newer := trafficPolicy(ns, "a-new", "web")
	create(t, h.c, newer,
		trafficPolicy(ns, "orphan", "missing"),
		&meshv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "allow-web"}},
	)

	waitPolicyStatus(t, h.c, &meshv1.TrafficPolicy{}, ns, "b-old", 1, "True/Accepted")
	waitPolicyStatus(t, h.c, &meshv1.TrafficPolicy{}, ns, "a-new", 1, "False/Conflicted")
	waitPolicyStatus(t, h.c, &meshv1.TrafficPolicy{}, ns, "orphan", 1, "False/TargetNotFound")
	waitPolicyStatus(t, h.c, &meshv1.AuthorizationPolicy{}, ns, "allow-web", 1, "True/Accepted")

	// The missing target appears; the policy in force goes.
	create(t, h.c, service(ns, "missing", servicePortSpec{name: "http", port: 80, target: 8080}))
	if err := h.c.Delete(context.Background(), trafficPolicy(ns, "b-old")); err != nil {
		t.Fatal(err)
	}
	waitPolicyStatus(t, h.c, &meshv1.TrafficPolicy{}, ns, "orphan", 1, "True/Accepted")
	waitPolicyStatus(t, h.c, &meshv1.TrafficPolicy{}, ns, "a-new", 1, "True/Accepted")

	// A new spec is observed.
	eventually(t, "updating a-new", func() error {
		if err := h.c.Get(context.Background(), client.ObjectKeyFromObject(newer), newer); err != nil {
			return err
		}
		newer.Spec.LoadBalancer = meshv1.LoadBalancerRoundRobin
		return h.c.Update(context.Background(), newer)
	})
	waitPolicyStatus(t, h.c, &meshv1.TrafficPolicy{}, ns, "a-new", 2, "True/Accepted")
}

// waitPolicyStatus waits for a policy's Accepted condition to be want
// ("Status/Reason"), its status and condition for generation.
func waitPolicyStatus(t *testing.T, c client.Client, obj client.Object, ns, name string, generation int64, want string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%T %s/%s Accepted %s", obj, ns, name, want), func() error {
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
			return err
		}
		var conds []metav1.Condition
		var observed int64
		switch p := obj.(type) {
		case *meshv1.TrafficPolicy:
			conds, observed = p.Status.Conditions, p.Status.ObservedGeneration
		case *meshv1.AuthorizationPolicy:
			conds, observed = p.Status.Conditions, p.Status.ObservedGeneration
		}
		cond := meta.FindStatusCondition(conds, meshv1.AcceptedCondition)
		if cond == nil {
			return fmt.Errorf("no Accepted condition in %+v", conds)
		}
		if got := string(cond.Status) + "/" + cond.Reason; got != want || cond.ObservedGeneration != generation || observed != generation {
			return fmt.Errorf("Accepted is %s (%q), condition generation %d, status generation %d; want %s, generation %d",
				got, cond.Message, cond.ObservedGeneration, observed, want, generation)
		}
		return nil
	})
}
