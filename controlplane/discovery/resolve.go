package discovery

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// destination is an OutboundRequest's destination, parsed: an IP or a
// Service's name, and a port.
type destination struct {
	ip   netip.Addr // valid for an IP destination
	svc  objKey     // set for a Service name
	port int32
}

// key is the destination's canonical form: every spelling of a Service's
// name shares one view.
func (d destination) key() string {
	if d.ip.IsValid() {
		return netip.AddrPortFrom(d.ip, uint16(d.port)).String()
	}
	return d.svc.name + "." + d.svc.namespace + ":" + strconv.Itoa(int(d.port))
}

// parseDestination reads host:port, where host is an IP or a Service's DNS
// name: name.namespace, name.namespace.svc or name.namespace.svc.<domain>.
// A host that is neither can never be known; ok is then false.
func parseDestination(s, clusterDomain string) (d destination, ok bool, err error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return d, false, fmt.Errorf("destination %q is not host:port: %w", s, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return d, false, fmt.Errorf("destination %q: port %q is not a number from 1 to 65535", s, portStr)
	}
	d.port = int32(port)
	if ip, err := netip.ParseAddr(host); err == nil {
		d.ip = ip.Unmap().WithZone("")
		return d, true, nil
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	parts := strings.SplitN(host, ".", 3)
	if len(parts) < 2 {
		return d, false, nil
	}
	if len(parts) == 3 && parts[2] != "svc" && parts[2] != "svc."+clusterDomain {
		return d, false, nil
	}
	if len(validation.IsDNS1035Label(parts[0])) > 0 || len(validation.IsDNS1123Label(parts[1])) > 0 {
		return d, false, nil
	}
	d.svc = objKey{namespace: parts[1], name: parts[0]}
	return d, true, nil
}

// resolution is what a destination is, at the moment.
type resolution struct {
	kind resolutionKind
	svc  objKey
	// port is the Service port the destination is, or the one whose
	// endpoint a pod destination is.
	port *corev1.ServicePort
	// endpoint is a pod destination's, from its EndpointSlice; unset for a
	// pod that no Service selects.
	endpoint *discoveryv1.Endpoint
	zone     string
	pod      objKey
	address  string // ip:port of a pod destination
}

type resolutionKind uint8

const (
	unknownDestination resolutionKind = iota
	// serviceDestination: a Service's cluster IP or name.
	serviceDestination
	// endpointDestination: a pod IP behind a Service.
	endpointDestination
	// podDestination: a pod IP behind no Service.
	podDestination
)

// resolve finds what a destination is; resKey is what the answer hangs on.
func (ix *Index) resolve(d destination) (r resolution, resKey string) {
	if !d.ip.IsValid() {
		svc := ix.services[d.svc]
		if svc != nil && svc.Spec.Type != corev1.ServiceTypeExternalName {
			if sp := servicePort(svc, d.port); sp != nil {
				return resolution{kind: serviceDestination, svc: d.svc, port: sp}, svcRes(d.svc)
			}
		}
		return resolution{kind: unknownDestination}, svcRes(d.svc)
	}
	ip := d.ip.String()
	resKey = ipRes(ip)
	if k, ok := ix.clusterIPs[ip]; ok {
		if sp := servicePort(ix.services[k], d.port); sp != nil {
			return resolution{kind: serviceDestination, svc: k, port: sp}, resKey
		}
		return resolution{}, resKey
	}
	address := net.JoinHostPort(ip, strconv.Itoa(int(d.port)))
	if r, ok := ix.endpointAt(ip, d.port); ok {
		r.address = address
		return r, resKey
	}
	if k, ok := ix.podIPs[ip]; ok {
		return resolution{kind: podDestination, pod: k, address: address}, resKey
	}
	return resolution{}, resKey
}

// servicePort is a Service's TCP port numbered port.
func servicePort(svc *corev1.Service, port int32) *corev1.ServicePort {
	if svc == nil {
		return nil
	}
	for i := range svc.Spec.Ports {
		sp := &svc.Spec.Ports[i]
		if sp.Port == port && (sp.Protocol == "" || sp.Protocol == corev1.ProtocolTCP) {
			return sp
		}
	}
	return nil
}

// endpointAt finds the Service endpoint at ip:port, ready or not: an app
// that dials a pod means that pod. Of several Services, the first by name.
func (ix *Index) endpointAt(ip string, port int32) (resolution, bool) {
	for _, k := range ix.addrSvcs[ip].services() {
		svc := ix.services[k]
		if svc == nil {
			continue
		}
		for sk := range ix.svcSlices[k] {
			s := ix.slices[sk]
			for _, p := range s.Ports {
				if p.Port == nil || *p.Port != port || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
					continue
				}
				sp := servicePortNamed(svc, deref(p.Name))
				if sp == nil {
					continue
				}
				for i := range s.Endpoints {
					ep := &s.Endpoints[i]
					if len(ep.Addresses) > 0 && ep.Addresses[0] == ip {
						pod, _ := podRef(s.Namespace, ep)
						return resolution{kind: endpointDestination, svc: k, port: sp, endpoint: ep, zone: deref(ep.Zone), pod: pod}, true
					}
				}
			}
		}
	}
	return resolution{}, false
}

func servicePortNamed(svc *corev1.Service, name string) *corev1.ServicePort {
	for i := range svc.Spec.Ports {
		sp := &svc.Spec.Ports[i]
		if sp.Name == name && (sp.Protocol == "" || sp.Protocol == corev1.ProtocolTCP) {
			return sp
		}
	}
	return nil
}

func compareKeys(a, b objKey) int {
	if c := strings.Compare(a.namespace, b.namespace); c != 0 {
		return c
	}
	return strings.Compare(a.name, b.name)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
