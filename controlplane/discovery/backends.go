package discovery

import (
	"cmp"
	"net"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/trellis-mesh/trellis/ca"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// backend is a Service port with its ready endpoints and its own
// TrafficPolicy, computed once per change of the Service, its slices, their
// pods or its policy and shared by every response that holds it. A Service
// or port that does not exist has no endpoints.
func (ix *Index) backend(k objKey, port int32) *controlplanev1.Backend {
	if b := ix.backends[k][port]; b != nil {
		return b
	}
	b := &controlplanev1.Backend{
		Service: &controlplanev1.ServiceRef{Name: k.name, Namespace: k.namespace, Port: uint32(port)},
		Policy:  ix.trafficPolicy(k),
	}
	if sp := servicePort(ix.services[k], port); sp != nil {
		b.Endpoints = ix.endpoints(k, sp)
	}
	byPort := ix.backends[k]
	if byPort == nil {
		byPort = map[int32]*controlplanev1.Backend{}
		ix.backends[k] = byPort
	}
	byPort[port] = b
	return b
}

// endpoints are the ready endpoints of a Service port, sorted by address.
// An address in two slices (as while the EndpointSlice controller moves it)
// is listed once.
func (ix *Index) endpoints(k objKey, sp *corev1.ServicePort) []*controlplanev1.Endpoint {
	var eps []*controlplanev1.Endpoint
	seen := map[string]struct{}{}
	for sk := range ix.svcSlices[k] {
		s := ix.slices[sk]
		if s.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		target := slicePort(s, sp)
		if target == 0 {
			continue
		}
		portStr := strconv.Itoa(int(target))
		for i := range s.Endpoints {
			ep := &s.Endpoints[i]
			// Ready unset means ready, as the API says; kube-proxy uses
			// only the first address, and so do we.
			if len(ep.Addresses) == 0 || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			addr := net.JoinHostPort(ep.Addresses[0], portStr)
			if _, dup := seen[addr]; dup {
				continue
			}
			seen[addr] = struct{}{}
			eps = append(eps, ix.endpoint(s.Namespace, addr, ep))
		}
	}
	slices.SortFunc(eps, func(a, b *controlplanev1.Endpoint) int { return cmp.Compare(a.Address, b.Address) })
	return eps
}

// slicePort is the target port number that an EndpointSlice gives a Service
// port, matched by name as the EndpointSlice controller writes it; 0 if none.
func slicePort(s *discoveryv1.EndpointSlice, sp *corev1.ServicePort) int32 {
	for _, p := range s.Ports {
		if p.Port != nil && deref(p.Name) == sp.Name && (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) {
			return *p.Port
		}
	}
	return 0
}

// endpoint describes one address of an EndpointSlice endpoint.
func (ix *Index) endpoint(sliceNS, addr string, ep *discoveryv1.Endpoint) *controlplanev1.Endpoint {
	e := &controlplanev1.Endpoint{Address: addr, Node: deref(ep.NodeName), Zone: deref(ep.Zone)}
	if k, ok := podRef(sliceNS, ep); ok {
		e.Pod = k.name
		if pod := ix.pods[k]; pod != nil {
			e.Identity = ix.identity(pod)
			if e.Node == "" {
				e.Node = pod.Spec.NodeName
			}
		}
	}
	return e
}

// identity is a pod's SPIFFE ID if it is meshed: it has the sidecar and its
// namespace is in this Mesh. Otherwise it is empty, and callers reach the
// pod without mTLS.
func (ix *Index) identity(pod *corev1.Pod) string {
	if !injected(pod) || !ix.meshed(pod.Namespace) {
		return ""
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	id, err := ca.SPIFFEID(ix.cfg.TrustDomain, pod.Namespace, sa)
	if err != nil {
		return ""
	}
	return id
}
