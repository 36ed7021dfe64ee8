package discovery

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
)

// policyStatusUpdate returns a copy of the policy with its new status, or
// nil when there is nothing to write: the policy is gone, outside the Mesh,
// or its status is already right.
func (ix *Index) policyStatusUpdate(k policyKey) client.Object {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if !ix.meshed(k.namespace) {
		return nil
	}
	switch k.kind {
	case trafficPolicyKind:
		p := ix.trafficPolicies[k.objKey]
		if p == nil {
			return nil
		}
		conds, changed := withCondition(p.Status.Conditions, ix.trafficPolicyAccepted(p))
		if !changed && p.Status.ObservedGeneration == p.Generation {
			return nil
		}
		out := p.DeepCopy()
		out.Status.Conditions, out.Status.ObservedGeneration = conds, p.Generation
		return out
	case authorizationPolicyKind:
		p := ix.authz[k.namespace][k.name]
		if p == nil {
			return nil
		}
		conds, changed := withCondition(p.Status.Conditions, authorizationPolicyAccepted(p))
		if !changed && p.Status.ObservedGeneration == p.Generation {
			return nil
		}
		out := p.DeepCopy()
		out.Status.Conditions, out.Status.ObservedGeneration = conds, p.Generation
		return out
	}
	return nil
}

// withCondition returns a copy of conds with c set, and whether that
// changed them. A condition that keeps its status keeps its
// lastTransitionTime; other types are left alone.
func withCondition(conds []metav1.Condition, c metav1.Condition) ([]metav1.Condition, bool) {
	out := slices.Clone(conds)
	changed := meta.SetStatusCondition(&out, c)
	return out, changed
}

// trafficPolicyAccepted is a TrafficPolicy's Accepted condition: False with
// reason TargetNotFound when a target Service does not exist, else
// Conflicted when an older policy is in force for a target (as
// policyInForce decides), else True. The policy is in force for its other
// targets either way, and the message says which.
func (ix *Index) trafficPolicyAccepted(p *meshv1.TrafficPolicy) metav1.Condition {
	var missing, conflicts, held []string
	for _, t := range policyTargets(p) {
		if ix.services[t] == nil {
			missing = append(missing, t.name)
			continue
		}
		if winner := ix.policyInForce(t); winner != nil && keyOf(winner) != keyOf(p) {
			conflicts = append(conflicts, fmt.Sprintf("TrafficPolicy %s, older, is in force for Service %s", winner.Name, t.name))
			continue
		}
		held = append(held, t.name)
	}
	c := metav1.Condition{
		Type:               meshv1.AcceptedCondition,
		Status:             metav1.ConditionTrue,
		Reason:             meshv1.PolicyAcceptedReason,
		ObservedGeneration: p.Generation,
	}
	var msg []string
	if len(missing) > 0 {
		c.Status, c.Reason = metav1.ConditionFalse, meshv1.PolicyTargetNotFoundReason
		fix := "does not exist: create it, or remove it"
		if len(missing) > 1 {
			fix = "do not exist: create them, or remove them"
		}
		msg = append(msg, fmt.Sprintf("%s of namespace %s %s from spec.targetRefs", servicesNamed(missing), p.Namespace, fix))
	}
	if len(conflicts) > 0 {
		if c.Status == metav1.ConditionTrue {
			c.Status, c.Reason = metav1.ConditionFalse, meshv1.PolicyConflictedReason
		}
		msg = append(msg, strings.Join(conflicts, "; ")+": policies are not merged; move these settings into the policy in force, or remove the Service from spec.targetRefs")
	}
	if len(held) > 0 {
		msg = append(msg, "In force for "+servicesNamed(held))
	}
	c.Message = strings.Join(msg, ". ")
	return c
}

func servicesNamed(names []string) string {
	if len(names) == 1 {
		return "Service " + names[0]
	}
	return "Services " + strings.Join(names, ", ")
}

// authorizationPolicyAccepted is an AuthorizationPolicy's Accepted
// condition: False with reason Invalid when its selector cannot be
// compiled, in which case authorization applies it, failing closed, to
// every pod of its namespace; else True.
func authorizationPolicyAccepted(p *meshv1.AuthorizationPolicy) metav1.Condition {
	c := metav1.Condition{
		Type:               meshv1.AcceptedCondition,
		Status:             metav1.ConditionTrue,
		Reason:             meshv1.PolicyAcceptedReason,
		Message:            "Enforced by the proxies of the pods it selects",
		ObservedGeneration: p.Generation,
	}
	if _, err := podSelector(p.Spec.Selector); err != nil {
		effect := "denies every request to every pod of namespace " + p.Namespace
		if p.Spec.Action != meshv1.AuthorizationActionDeny {
			effect = "makes every pod of namespace " + p.Namespace + " deny what no other Allow policy allows"
		}
		c.Status, c.Reason = metav1.ConditionFalse, meshv1.PolicyInvalidReason
		c.Message = fmt.Sprintf("spec.selector: %v: fix the selector; until then the policy %s", err, effect)
	}
	return c
}
