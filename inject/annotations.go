package inject

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/sidecar"
)

// ports returns the union of the Mesh's ports in field and the pod's in
// annotation, sorted, without duplicates.
func ports(ref string, pod *corev1.Pod, mesh *meshv1.Mesh, annotation, field string, fromMesh []meshv1.Port) ([]int32, error) {
	var out []int32
	for _, p := range fromMesh {
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf("mesh %s: %s holds %d, which is not a port number (1-65535); remove it", mesh.Name, field, p)
		}
		out = append(out, int32(p))
	}
	for _, s := range sidecar.SplitList(pod.Annotations[annotation]) {
		n, err := strconv.ParseInt(s, 10, 32)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("pod %s: annotation %s holds %q, which is not a port number (1-65535); write comma-separated ports such as \"8080,9090\"", ref, annotation, s)
		}
		out = append(out, int32(n))
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// cidrs returns the union of the Mesh's excluded outbound networks and the
// pod's, canonical (10.1.2.3/8 is 10.0.0.0/8; a bare address is a network
// of one), sorted IPv4 first, without duplicates.
func cidrs(ref string, pod *corev1.Pod, mesh *meshv1.Mesh) ([]string, error) {
	var prefixes []netip.Prefix
	for _, c := range mesh.Spec.Proxy.ExcludeOutboundCIDRs {
		p, ok := parseCIDR(string(c))
		if !ok {
			return nil, fmt.Errorf("mesh %s: spec.proxy.excludeOutboundCIDRs holds %q, which is not a CIDR such as 10.0.0.0/8 or fd00::/8; fix or remove it", mesh.Name, c)
		}
		prefixes = append(prefixes, p)
	}
	for _, s := range sidecar.SplitList(pod.Annotations[sidecar.AnnotationExcludeOutboundCIDRs]) {
		p, ok := parseCIDR(s)
		if !ok {
			return nil, fmt.Errorf("pod %s: annotation %s holds %q, which is not a CIDR; write comma-separated networks such as \"10.0.0.0/8,169.254.169.254/32\"", ref, sidecar.AnnotationExcludeOutboundCIDRs, s)
		}
		prefixes = append(prefixes, p)
	}
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Bits(), b.Bits())
	})
	prefixes = slices.Compact(prefixes)
	var out []string
	for _, p := range prefixes {
		out = append(out, p.String())
	}
	return out, nil
}

func parseCIDR(s string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), true
	}
	// A bare address is a network of one; a zone means nothing to netfilter.
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

// defaultProxyResources are the proxy's resources when the Mesh sets none:
// enough for an idle proxy, and a memory limit that catches a leak before
// the node does. No CPU limit: throttling a proxy adds latency to every
// request of the app.
func defaultProxyResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("10m"),
			corev1.ResourceMemory: resource.MustParse("20Mi"),
		},
		Limits: corev1.ResourceList{
			corev1.ResourceMemory: resource.MustParse("64Mi"),
		},
	}
}

// resourceAnnotations are the per-pod overrides of the proxy's resources.
var resourceAnnotations = []struct {
	annotation string
	limit      bool
	name       corev1.ResourceName
}{
	{sidecar.AnnotationProxyCPURequest, false, corev1.ResourceCPU},
	{sidecar.AnnotationProxyMemoryRequest, false, corev1.ResourceMemory},
	{sidecar.AnnotationProxyCPULimit, true, corev1.ResourceCPU},
	{sidecar.AnnotationProxyMemoryLimit, true, corev1.ResourceMemory},
}

// proxyResources returns the Mesh's proxy resources (or the defaults) with
// the pod's annotations applied, and refuses a request above its limit,
// which the API server would refuse with a message that does not say where
// the numbers came from.
func proxyResources(ref string, pod *corev1.Pod, mesh *meshv1.Mesh) (corev1.ResourceRequirements, error) {
	r := defaultProxyResources()
	source := "the default"
	if mesh.Spec.Proxy.Resources != nil {
		r = *mesh.Spec.Proxy.Resources.DeepCopy()
		source = fmt.Sprintf("Mesh %s spec.proxy.resources", mesh.Name)
	}
	from := map[string]string{} // "requests/cpu" → where its value came from
	for _, a := range resourceAnnotations {
		v, ok := pod.Annotations[a.annotation]
		if !ok {
			continue
		}
		q, err := resource.ParseQuantity(strings.TrimSpace(v))
		if err != nil || q.Sign() < 0 {
			return corev1.ResourceRequirements{}, fmt.Errorf("pod %s: annotation %s holds %q, which is not a quantity such as 100m or 128Mi", ref, a.annotation, v)
		}
		list := &r.Requests
		kind := "requests"
		if a.limit {
			list, kind = &r.Limits, "limits"
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[a.name] = q
		from[kind+"/"+string(a.name)] = "annotation " + a.annotation
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := r.Requests[name]
		lim, hasLim := r.Limits[name]
		if hasReq && hasLim && req.Cmp(lim) > 0 {
			return corev1.ResourceRequirements{}, fmt.Errorf("pod %s: the proxy's %s request %s (from %s) is more than its limit %s (from %s); raise the limit with %s or lower the request",
				ref, name, req.String(), orDefault(from["requests/"+string(name)], source), lim.String(), orDefault(from["limits/"+string(name)], source),
				limitAnnotation(name))
		}
	}
	return r, nil
}

func limitAnnotation(name corev1.ResourceName) string {
	if name == corev1.ResourceCPU {
		return sidecar.AnnotationProxyCPULimit
	}
	return sidecar.AnnotationProxyMemoryLimit
}
