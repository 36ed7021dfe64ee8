package discovery

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// ControllerName is the controllerName of the route status entries that
// Trellis writes, one per Service parentRef.
const ControllerName gwv1.GatewayController = "trellis.dev/mesh-controller"

// StatusWriter writes the status of the HTTPRoutes and GRPCRoutes of the
// Mesh's namespaces for their Service parents (GAMMA): Accepted and
// ResolvedRefs, under ControllerName, leaving other controllers' entries
// alone; and the Accepted condition and observedGeneration of the
// TrafficPolicies and AuthorizationPolicies of the Mesh's namespaces. It
// writes only what changes. Run one per Mesh: behind leader election (it
// is a controller-runtime Runnable that needs it, or see RunElected).
//
// Routes whose rules match the same requests to the same Service port are
// not reported as conflicting: the Gateway API (HTTPRouteRule.matches,
// GRPCRouteRule.matches) makes such ties a matter of precedence (the oldest
// route, then the first by namespace/name, then the first rule), not an
// error, and defines no route condition or reason for them, so each route
// stays Accepted. comparePrecedence applies that order.
type StatusWriter struct {
	index  *Index
	client client.Client
}

// NewStatusWriter returns a StatusWriter for the routes and policies that
// ix holds, writing with c (update on httproutes/status, grpcroutes/status,
// trafficpolicies/status and authorizationpolicies/status).
func NewStatusWriter(ix *Index, c client.Client) *StatusWriter {
	return &StatusWriter{index: ix, client: c}
}

// NeedLeaderElection tells a controller-runtime manager to run the writer
// on its leader only.
func (w *StatusWriter) NeedLeaderElection() bool { return true }

// Start writes status until ctx ends: every route and policy once, then
// each that a change may concern.
func (w *StatusWriter) Start(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx).WithName("status")
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[statusKey]())
	defer q.ShutDown()
	ix := w.index
	ix.mu.Lock()
	ix.statusListeners[q] = q.Add
	for k := range ix.routes {
		q.Add(statusKey{route: k})
	}
	for k := range ix.trafficPolicies {
		q.Add(statusKey{policy: policyKey{trafficPolicyKind, k}})
	}
	for ns, byName := range ix.authz {
		for name := range byName {
			q.Add(statusKey{policy: policyKey{authorizationPolicyKind, objKey{ns, name}}})
		}
	}
	ix.mu.Unlock()
	defer func() {
		ix.mu.Lock()
		delete(ix.statusListeners, q)
		ix.mu.Unlock()
	}()

	// Before the Index is synced, a parent or a target may look missing
	// that is only not listed yet.
	select {
	case <-ix.Synced():
	case <-ctx.Done():
		return nil
	}
	go func() {
		<-ctx.Done()
		q.ShutDown()
	}()
	for {
		k, shutdown := q.Get()
		if shutdown {
			return nil
		}
		err := w.sync(ctx, k)
		switch {
		case err == nil, apierrors.IsNotFound(err):
			q.Forget(k)
		case apierrors.IsConflict(err):
			// The cache has not seen the latest version yet; its update
			// will queue the object again too.
			q.AddRateLimited(k)
		default:
			log.Error(err, "Writing status", "kind", k.kind(), "object", k.name())
			q.AddRateLimited(k)
		}
		q.Done(k)
	}
}

func (w *StatusWriter) sync(ctx context.Context, k statusKey) error {
	var obj client.Object
	if k.policy.kind != 0 {
		obj = w.index.policyStatusUpdate(k.policy)
	} else {
		obj = w.index.routeStatusUpdate(k.route)
	}
	if obj == nil {
		return nil
	}
	if err := w.client.Status().Update(ctx, obj); err != nil {
		return fmt.Errorf("updating the status of %s %s: %w", k.kind(), k.name(), err)
	}
	return nil
}

func (k statusKey) kind() string {
	if k.policy.kind != 0 {
		return k.policy.kind.String()
	}
	return k.route.kind.String()
}

func (k statusKey) name() string {
	if k.policy.kind != 0 {
		return k.policy.String()
	}
	return k.route.String()
}

// routeStatusUpdate returns a copy of the route with its new status, or nil
// when there is nothing to write: the route is gone, outside the Mesh, or
// its status is already right.
func (ix *Index) routeStatusUpdate(k routeKey) client.Object {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	obj := ix.routes[k]
	if obj == nil || !ix.meshed(k.namespace) {
		return nil
	}
	var current []gwv1.RouteParentStatus
	switch r := obj.(type) {
	case *gwv1.HTTPRoute:
		current = r.Status.Parents
	case *gwv1.GRPCRoute:
		current = r.Status.Parents
	}
	next := mergeParents(current, ix.parentStatuses(k.kind, obj))
	if equality.Semantic.DeepEqual(current, next) {
		return nil
	}
	switch r := obj.DeepCopyObject().(type) {
	case *gwv1.HTTPRoute:
		r.Status.Parents = next
		return r
	case *gwv1.GRPCRoute:
		r.Status.Parents = next
		return r
	}
	return nil
}

// parentStatuses are Trellis's entries for a route: one per Service
// parentRef, in spec order.
func (ix *Index) parentStatuses(kind routeKind, obj client.Object) []gwv1.RouteParentStatus {
	var out []gwv1.RouteParentStatus
	resolved := ix.resolvedRefsCondition(kind, obj)
	for _, p := range parentRefs(obj) {
		if !isServiceParent(p) || slices.ContainsFunc(out, func(s gwv1.RouteParentStatus) bool { return equality.Semantic.DeepEqual(s.ParentRef, p) }) {
			continue
		}
		out = append(out, gwv1.RouteParentStatus{
			ParentRef:      p,
			ControllerName: ControllerName,
			Conditions:     []metav1.Condition{ix.acceptedCondition(obj, p), resolved},
		})
	}
	return out
}

func (ix *Index) acceptedCondition(obj client.Object, p gwv1.ParentReference) metav1.Condition {
	c := metav1.Condition{
		Type:               string(gwv1.RouteConditionAccepted),
		Status:             metav1.ConditionFalse,
		Reason:             string(gwv1.RouteReasonNoMatchingParent),
		ObservedGeneration: obj.GetGeneration(),
	}
	k := parentKey(obj.GetNamespace(), p)
	svc := ix.services[k]
	switch {
	case svc == nil:
		c.Message = fmt.Sprintf("Service %s does not exist: create it, or fix the parentRef", k)
	case p.Port != nil && servicePort(svc, *p.Port) == nil:
		c.Message = fmt.Sprintf("Service %s has no TCP port %d: fix the parentRef's port", k, *p.Port)
	case p.SectionName != nil && servicePortNamed(svc, string(*p.SectionName)) == nil:
		c.Message = fmt.Sprintf("Service %s has no TCP port named %q: fix the parentRef's sectionName", k, *p.SectionName)
	default:
		c.Status, c.Reason = metav1.ConditionTrue, string(gwv1.RouteReasonAccepted)
		c.Message = fmt.Sprintf("Routes requests to Service %s in Trellis Mesh %s", k, ix.cfg.Mesh)
	}
	return c
}

// resolvedRefsCondition checks every backendRef of a route: the reason is
// that of the first that fails, the message names each that fails.
func (ix *Index) resolvedRefsCondition(kind routeKind, obj client.Object) metav1.Condition {
	c := metav1.Condition{
		Type:               string(gwv1.RouteConditionResolvedRefs),
		Status:             metav1.ConditionTrue,
		Reason:             string(gwv1.RouteReasonResolvedRefs),
		Message:            "All backendRefs resolve",
		ObservedGeneration: obj.GetGeneration(),
	}
	var problems []string
	for ri, refs := range ruleBackendRefs(obj) {
		for bi, ref := range refs {
			rc := ix.checkBackendRef(kind, obj, ref.BackendObjectReference)
			if rc.reason == "" {
				continue
			}
			if len(problems) == 0 {
				c.Status, c.Reason = metav1.ConditionFalse, string(rc.reason)
			}
			problems = append(problems, fmt.Sprintf("spec.rules[%d].backendRefs[%d]: %s", ri, bi, rc.message))
		}
	}
	if len(problems) > 0 {
		const most = 8
		if len(problems) > most {
			problems = append(problems[:most], fmt.Sprintf("and %d more", len(problems)-most))
		}
		c.Message = strings.Join(problems, "; ")
	}
	return c
}

// mergeParents replaces Trellis's entries in a route's status.parents with
// desired ones: others' entries and the order stay as they were, an entry
// for a parent no longer there goes, a new one is appended, and a
// condition that keeps its status keeps its lastTransitionTime.
func mergeParents(current, desired []gwv1.RouteParentStatus) []gwv1.RouteParentStatus {
	out := make([]gwv1.RouteParentStatus, 0, len(current)+len(desired))
	placed := make([]bool, len(desired))
	for _, c := range current {
		if c.ControllerName != ControllerName {
			out = append(out, c)
			continue
		}
		i := slices.IndexFunc(desired, func(d gwv1.RouteParentStatus) bool {
			return equality.Semantic.DeepEqual(d.ParentRef, c.ParentRef)
		})
		if i < 0 || placed[i] {
			continue
		}
		placed[i] = true
		out = append(out, withConditions(c.Conditions, desired[i]))
	}
	for i, d := range desired {
		if !placed[i] {
			out = append(out, withConditions(nil, d))
		}
	}
	return out
}

func withConditions(existing []metav1.Condition, d gwv1.RouteParentStatus) gwv1.RouteParentStatus {
	var conds []metav1.Condition
	for _, want := range d.Conditions {
		if old := meta.FindStatusCondition(existing, want.Type); old != nil {
			conds = append(conds, *old)
		}
	}
	for _, want := range d.Conditions {
		meta.SetStatusCondition(&conds, want)
	}
	d.Conditions = conds
	return d
}
