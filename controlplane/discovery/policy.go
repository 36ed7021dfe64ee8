package discovery

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"google.golang.org/protobuf/types/known/durationpb"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/sidecar"
)

// policyTargets are the Services a TrafficPolicy targets.
func policyTargets(tp *meshv1.TrafficPolicy) []objKey {
	var out []objKey
	for _, t := range tp.Spec.TargetRefs {
		if t.Group == "" && (t.Kind == "" || t.Kind == "Service") {
			out = append(out, objKey{tp.Namespace, t.Name})
		}
	}
	return out
}

// trafficPolicy is the TrafficPolicy in force for Service k, compiled: of
// those of the Mesh's namespaces that target it, the oldest, then the first
// by name. Nil when none does.
func (ix *Index) trafficPolicy(k objKey) *controlplanev1.TrafficPolicy {
	best := ix.policyInForce(k)
	if best == nil {
		return nil
	}
	return compileTrafficPolicy(&best.Spec)
}

// policyInForce is the TrafficPolicy in force for Service k, as
// trafficPolicy says; nil when none targets it.
func (ix *Index) policyInForce(k objKey) *meshv1.TrafficPolicy {
	var best *meshv1.TrafficPolicy
	for pk := range ix.tpByTarget[k] {
		tp := ix.trafficPolicies[pk]
		if tp == nil || !ix.meshed(tp.Namespace) {
			continue
		}
		if best == nil || olderPolicy(tp, best) {
			best = tp
		}
	}
	return best
}

func olderPolicy(a, b *meshv1.TrafficPolicy) bool {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c < 0
	}
	return a.Name < b.Name
}

// compileTrafficPolicy turns a TrafficPolicy's spec into the proxies'
// message. Defaults that the CRD fills in are filled in here too, for
// objects built in Go.
func compileTrafficPolicy(s *meshv1.TrafficPolicySpec) *controlplanev1.TrafficPolicy {
	out := &controlplanev1.TrafficPolicy{LoadBalancer: controlplanev1.LoadBalancer_LOAD_BALANCER_LEAST_REQUEST}
	switch s.LoadBalancer {
	case meshv1.LoadBalancerRoundRobin:
		out.LoadBalancer = controlplanev1.LoadBalancer_LOAD_BALANCER_ROUND_ROBIN
	case meshv1.LoadBalancerRandom:
		out.LoadBalancer = controlplanev1.LoadBalancer_LOAD_BALANCER_RANDOM
	}
	out.ConnectTimeout = duration(s.ConnectTimeout.Duration, 10*time.Second)
	if s.RequestTimeout != nil {
		out.RequestTimeout = duration(s.RequestTimeout.Duration, 0)
	}
	if l := s.ConnectionLimits; l != nil {
		out.MaxConnections = positive(l.MaxConnections, 0)
		out.MaxPendingRequests = positive(l.MaxPendingRequests, 0)
	}
	if o := s.OutlierDetection; o != nil {
		out.ConsecutiveErrors = positive(o.ConsecutiveErrors, 5)
		out.BaseEjectionTime = duration(o.BaseEjectionTime.Duration, 30*time.Second)
		out.OutlierInterval = duration(o.Interval.Duration, 10*time.Second)
		out.MaxEjectionPercent = 50
		if o.MaxEjectionPercent != nil {
			out.MaxEjectionPercent = uint32(max(0, *o.MaxEjectionPercent))
		}
	}
	out.RetryBudgetPercent, out.RetryBudgetMinPerSecond = 20, 10
	if b := s.RetryBudget; b != nil {
		if b.Percent != nil {
			out.RetryBudgetPercent = uint32(max(0, *b.Percent))
		}
		if b.MinRetriesPerSecond != nil {
			out.RetryBudgetMinPerSecond = uint32(max(0, *b.MinRetriesPerSecond))
		}
	}
	return out
}

func duration(d, def time.Duration) *durationpb.Duration {
	if d <= 0 {
		d = def
	}
	if d <= 0 {
		return nil
	}
	return durationpb.New(d)
}

func positive(p *int32, def uint32) uint32 {
	if p == nil || *p <= 0 {
		return def
	}
	return uint32(*p)
}

// authorization compiles the AuthorizationPolicies of a pod's namespace that
// select it, in name order: nil when none does (everyone may call). Each
// rule becomes one AuthorizationRule per pair of its from and to entries,
// since a message's fields are ANDed and a rule's entries ORed. A policy
// whose selector cannot be read fails closed for every pod of the
// namespace: an Allow policy allows nothing, a Deny policy denies all.
func (ix *Index) authorization(pod *corev1.Pod) *controlplanev1.Authorization {
	byName := ix.authz[pod.Namespace]
	if len(byName) == 0 {
		return nil
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	slices.Sort(names)
	var out controlplanev1.Authorization
	selected := false
	for _, name := range names {
		p := byName[name]
		sel, err := podSelector(p.Spec.Selector)
		if err == nil && !sel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		selected = true
		deny := p.Spec.Action == meshv1.AuthorizationActionDeny
		if !deny {
			out.DefaultDeny = true
		}
		if err != nil {
			if deny {
				out.Deny = append(out.Deny, &controlplanev1.AuthorizationRule{Name: fmt.Sprintf("%s/%s/invalid", p.Namespace, p.Name)})
			}
			continue
		}
		rules := compileAuthorizationRules(p)
		if deny {
			out.Deny = append(out.Deny, rules...)
		} else {
			out.Allow = append(out.Allow, rules...)
		}
	}
	if !selected {
		return nil
	}
	return &out
}

func podSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(s)
}

func compileAuthorizationRules(p *meshv1.AuthorizationPolicy) []*controlplanev1.AuthorizationRule {
	var out []*controlplanev1.AuthorizationRule
	for ri, r := range p.Spec.Rules {
		name := fmt.Sprintf("%s/%s/%d", p.Namespace, p.Name, ri)
		froms := r.From
		if len(froms) == 0 {
			froms = []meshv1.AuthorizationSource{{}}
		}
		tos := r.To
		if len(tos) == 0 {
			tos = []meshv1.AuthorizationOperation{{}}
		}
		for _, f := range froms {
			for _, t := range tos {
				rule := &controlplanev1.AuthorizationRule{Name: name, Unauthenticated: f.Unauthenticated}
				for _, id := range f.Identities {
					rule.Identities = append(rule.Identities, string(id))
				}
				for _, ns := range f.Namespaces {
					rule.Namespaces = append(rule.Namespaces, string(ns))
				}
				for _, port := range t.Ports {
					rule.Ports = append(rule.Ports, uint32(port))
				}
				for _, path := range t.Paths {
					rule.Paths = append(rule.Paths, string(path))
				}
				for _, m := range t.Methods {
					rule.Methods = append(rule.Methods, strings.ToUpper(string(m)))
				}
				out = append(out, rule)
			}
		}
	}
	return out
}

// inboundPorts are a pod's TCP container ports (its proxy's aside), each
// with what it carries: as a Service port that targets it says (the
// EndpointSlices copy the Service's port names and appProtocols), else as
// the container port's name says, else opaque TCP.
func (ix *Index) inboundPorts(k objKey, pod *corev1.Pod) []*controlplanev1.InboundPort {
	hints := ix.serviceHints(k)
	seen := map[int32]bool{}
	var out []*controlplanev1.InboundPort
	add := func(c corev1.Container) {
		if c.Name == sidecar.ProxyContainerName {
			return
		}
		for _, cp := range c.Ports {
			if (cp.Protocol != "" && cp.Protocol != corev1.ProtocolTCP) || seen[cp.ContainerPort] {
				continue
			}
			seen[cp.ContainerPort] = true
			proto, ok := hints[cp.ContainerPort]
			if !ok {
				proto, _ = protocolFor(nil, cp.Name)
			}
			out = append(out, &controlplanev1.InboundPort{Port: uint32(cp.ContainerPort), Protocol: proto})
		}
	}
	for _, c := range pod.Spec.Containers {
		add(c)
	}
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			add(c)
		}
	}
	slices.SortFunc(out, func(a, b *controlplanev1.InboundPort) int { return cmp.Compare(a.Port, b.Port) })
	return out
}

// serviceHints are the protocols that the Services selecting a pod give its
// ports, by target port; of two Services that disagree, the first by name.
func (ix *Index) serviceHints(k objKey) map[int32]controlplanev1.Protocol {
	svcs := ix.podSvcs[k].services()
	hints := map[int32]controlplanev1.Protocol{}
	for _, svc := range svcs {
		for sk := range ix.svcSlices[svc] {
			s := ix.slices[sk]
			if !sliceHolds(s.Namespace, s.Endpoints, k) {
				continue
			}
			for _, p := range s.Ports {
				if p.Port == nil {
					continue
				}
				if _, done := hints[*p.Port]; done {
					continue
				}
				if proto, explicit := protocolFor(p.AppProtocol, deref(p.Name)); explicit {
					hints[*p.Port] = proto
				}
			}
		}
	}
	return hints
}

// sliceHolds reports whether endpoints of a slice in namespace ns point at pod k.
func sliceHolds(ns string, eps []discoveryv1.Endpoint, k objKey) bool {
	for i := range eps {
		if pod, ok := podRef(ns, &eps[i]); ok && pod == k {
			return true
		}
	}
	return false
}
