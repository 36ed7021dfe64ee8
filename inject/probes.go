package inject

import (
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/trellis-mesh/trellis/sidecar"
)

// AppProbes are an injected pod's original app probes, keyed by
// <container>/<livez|readyz|startupz>, the end of the path on
// sidecar.AdminPort that the probe was rewritten to. The proxy reads them
// from sidecar.EnvAppProbes, with its own types (appprobe.Probes), and runs
// each when the kubelet asks for its path.
//
// The kubelet's probes must go through the proxy: an HTTP probe to the pod
// IP is redirected to the proxy's inbound port, where a Strict Mesh refuses
// it for want of a client certificate; a TCP probe would reach the proxy,
// which accepts every connection, and always pass; a gRPC probe fails like an
// HTTP one. The proxy runs them from inside the pod, on localhost, instead.
type AppProbes map[string]corev1.ProbeHandler

// probeKinds are the probes of a container, by the path segment they are
// rewritten to.
var probeKinds = []struct {
	segment string
	name    string // for messages
	probe   func(*corev1.Container) **corev1.Probe
}{
	{"livez", "liveness", func(c *corev1.Container) **corev1.Probe { return &c.LivenessProbe }},
	{"readyz", "readiness", func(c *corev1.Container) **corev1.Probe { return &c.ReadinessProbe }},
	{"startupz", "startup", func(c *corev1.Container) **corev1.Probe { return &c.StartupProbe }},
}

// rewriteProbes rewrites, in pod, every HTTP, TCP and gRPC probe of the app
// containers (the regular ones and the user's native sidecars; other init
// containers cannot have probes) to an HTTP GET of its relay path on
// sidecar.AdminPort, keeping its timing. It returns the JSON of the
// originals, "" when there are none. Exec probes run inside the container
// and need no relay. A probe that is already a relay is left alone, and its
// original kept from the pod's sidecar.AnnotationAppProbes when it is there.
func rewriteProbes(ref string, pod *corev1.Pod) (string, []string, error) {
	var prior AppProbes
	if v, ok := pod.Annotations[sidecar.AnnotationAppProbes]; ok {
		_ = json.Unmarshal([]byte(v), &prior) // not ours to judge: a bad value is replaced
	}
	originals := AppProbes{}
	var warnings []string
	for _, c := range appContainers(pod) {
		for _, k := range probeKinds {
			p := *k.probe(c)
			if p == nil {
				continue
			}
			key := c.Name + "/" + k.segment
			if isRelay(p) {
				if h, ok := prior[key]; ok {
					originals[key] = h
				}
				continue
			}
			if handlers(p.ProbeHandler) != 1 || p.Exec != nil {
				// Exec, or not a valid probe, which the API server refuses.
				continue
			}
			orig := *p.ProbeHandler.DeepCopy()
			if orig.GRPC != nil && orig.GRPC.Service == nil {
				// The API server's default: the server's overall health.
				orig.GRPC.Service = ptr.To("")
			}
			var port *intstr.IntOrString
			switch {
			case orig.HTTPGet != nil:
				port = &orig.HTTPGet.Port
			case orig.TCPSocket != nil:
				port = &orig.TCPSocket.Port
			}
			if port != nil && port.Type == intstr.String {
				// The proxy does not know the container's port names.
				if n, ok := namedPort(c, port.StrVal); ok {
					*port = intstr.FromInt32(n)
				} else {
					warnings = append(warnings, fmt.Sprintf("container %s: the %s probe's port %q is not a port the container names; the probe fails, as it would without Trellis",
						c.Name, k.name, port.StrVal))
				}
			}
			originals[key] = orig
			p.ProbeHandler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path:   sidecar.AppHealthPathPrefix + key,
				Port:   intstr.FromInt32(sidecar.AdminPort),
				Scheme: corev1.URISchemeHTTP,
			}}
		}
	}
	if len(originals) == 0 {
		return "", warnings, nil
	}
	b, err := json.Marshal(originals) // maps marshal with sorted keys
	if err != nil {
		return "", nil, fmt.Errorf("pod %s: encoding the app's probes: %w", ref, err)
	}
	return string(b), warnings, nil
}

// isRelay reports whether p is already a probe relayed by the proxy.
func isRelay(p *corev1.Probe) bool {
	h := p.HTTPGet
	return h != nil && h.Port.Type == intstr.Int && h.Port.IntVal == sidecar.AdminPort && strings.HasPrefix(h.Path, sidecar.AppHealthPathPrefix)
}

// handlers counts the handlers of a probe; a valid one has exactly one.
func handlers(h corev1.ProbeHandler) int {
	n := 0
	for _, set := range []bool{h.Exec != nil, h.HTTPGet != nil, h.TCPSocket != nil, h.GRPC != nil} {
		if set {
			n++
		}
	}
	return n
}

func namedPort(c *corev1.Container, name string) (int32, bool) {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort, true
		}
	}
	return 0, false
}
