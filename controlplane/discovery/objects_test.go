package discovery

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/sidecar"
)

// Objects as a cluster holds them, built for tests: the same builders feed
// the API server in integration tests and the Index in unit tests and the
// benchmark.

func namespace(name string, meshed bool) *corev1.Namespace {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if meshed {
		ns.Labels = map[string]string{meshv1.InjectionLabel: "enabled"}
	}
	return ns
}

// servicePortSpec is one port of a test Service.
type servicePortSpec struct {
	name        string
	port        int32
	target      int32
	appProtocol string
}

func service(ns, name string, ports ...servicePortSpec) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": name}},
	}
	for _, p := range ports {
		sp := corev1.ServicePort{Name: p.name, Port: p.port, TargetPort: intstr.FromInt32(p.target), Protocol: corev1.ProtocolTCP}
		if p.appProtocol != "" {
			sp.AppProtocol = ptr.To(p.appProtocol)
		}
		svc.Spec.Ports = append(svc.Spec.Ports, sp)
	}
	return svc
}

// podSpec is a test pod.
type podSpec struct {
	name, serviceAccount, ip, node string
	injected                       bool
	labels                         map[string]string
	ports                          []corev1.ContainerPort
}

func pod(ns string, p podSpec) *corev1.Pod {
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.name, Labels: p.labels},
		Spec: corev1.PodSpec{
			ServiceAccountName: p.serviceAccount,
			NodeName:           p.node,
			Containers:         []corev1.Container{{Name: "app", Image: "registry.example/app:1", Ports: p.ports}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.ip, PodIPs: []corev1.PodIP{{IP: p.ip}}},
	}
	if p.injected {
		out.Annotations = map[string]string{sidecar.AnnotationStatus: `{"initContainers":["trellis-init","trellis-proxy"]}`}
	}
	return out
}

// endpointSpec is one endpoint of a test EndpointSlice.
type endpointSpec struct {
	ip, pod, node, zone string
	notReady            bool
}

// slicePortSpec is one port of a test EndpointSlice.
type slicePortSpec struct {
	name        string
	port        int32
	appProtocol string
}

func endpointSlice(ns, name, svc string, ports []slicePortSpec, eps ...endpointSpec) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc,
			discoveryv1.LabelManagedBy:   "endpointslice-controller.k8s.io",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range ports {
		sp := discoveryv1.EndpointPort{Name: ptr.To(p.name), Port: ptr.To(p.port), Protocol: ptr.To(corev1.ProtocolTCP)}
		if p.appProtocol != "" {
			sp.AppProtocol = ptr.To(p.appProtocol)
		}
		s.Ports = append(s.Ports, sp)
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{
			Addresses:  []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(!e.notReady)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: e.pod},
		}
		if e.node != "" {
			ep.NodeName = ptr.To(e.node)
		}
		if e.zone != "" {
			ep.Zone = ptr.To(e.zone)
		}
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}

func serviceParent(ns, name string, port int32) gwv1.ParentReference {
	p := gwv1.ParentReference{Group: ptr.To(gwv1.Group("")), Kind: ptr.To(gwv1.Kind("Service")), Name: gwv1.ObjectName(name)}
	if ns != "" {
		p.Namespace = ptr.To(gwv1.Namespace(ns))
	}
	if port != 0 {
		p.Port = ptr.To(port)
	}
	return p
}

func backendRef(ns, name string, port int32, weight int32) gwv1.HTTPBackendRef {
	ref := gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Port: ptr.To(port)}}}
	if ns != "" {
		ref.Namespace = ptr.To(gwv1.Namespace(ns))
	}
	if weight >= 0 {
		ref.Weight = ptr.To(weight)
	}
	return ref
}

func pathPrefix(p string) []gwv1.HTTPRouteMatch {
	return []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchPathPrefix), Value: ptr.To(p)}}}
}

func httpRoute(ns, name string, parents []gwv1.ParentReference, rules ...gwv1.HTTPRouteRule) *gwv1.HTTPRoute {
	return &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parents}, Rules: rules},
	}
}

// Writing to the test cluster.

func ensureNamespace(t *testing.T, c client.Client, name string, labels map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := c.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// meshedNamespace creates a new namespace of the default Mesh.
func meshedNamespace(t *testing.T, c client.Client, prefix string) string {
	t.Helper()
	ns := namespace("", true)
	ns.GenerateName = prefix + "-"
	if err := c.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func create(t *testing.T, c client.Client, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := c.Create(context.Background(), o); err != nil {
			t.Fatalf("creating %T %s/%s: %v", o, o.GetNamespace(), o.GetName(), err)
		}
	}
}

// createPod creates a pod with its ServiceAccount, then gives it the IP and
// phase a kubelet would.
func createPod(t *testing.T, c client.Client, p *corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Spec.ServiceAccountName}}
	if sa.Name == "" {
		sa.Name = "default"
	}
	if err := c.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	st := p.Status
	if err := c.Create(ctx, p); err != nil {
		t.Fatalf("creating pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	p.Status = st
	if err := c.Status().Update(ctx, p); err != nil {
		t.Fatalf("setting pod %s/%s's status: %v", p.Namespace, p.Name, err)
	}
}
