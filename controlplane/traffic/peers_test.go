package traffic

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// The peers are the other ready pods behind the control plane's Service,
// once each (a dual-stack Service has a slice per family), by name.
func TestEndpointSlicePeers(t *testing.T) {
	ready, notReady := true, false
	ep := func(pod, addr string, r *bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: r},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: pod, Namespace: "trellis-system"}}
	}
	slice := func(name, service, ns string, family discoveryv1.AddressType, eps ...discoveryv1.Endpoint) client.Object {
		return &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
			AddressType: family, Endpoints: eps,
		}
	}
	c := fake.NewClientBuilder().WithObjects(
		slice("cp-v4", "trellis-controlplane", "trellis-system", discoveryv1.AddressTypeIPv4,
			ep("cp-self", "10.0.0.1", &ready), ep("cp-c", "10.0.0.3", nil), ep("cp-b", "10.0.0.2", &ready), ep("cp-starting", "10.0.0.4", &notReady)),
		slice("cp-v6", "trellis-controlplane", "trellis-system", discoveryv1.AddressTypeIPv6, ep("cp-b", "fd00::2", &ready), ep("cp-d", "fd00::4", &ready)),
		slice("other", "web", "trellis-system", discoveryv1.AddressTypeIPv4, ep("web-1", "10.0.1.1", &ready)),
		slice("elsewhere", "trellis-controlplane", "other-mesh", discoveryv1.AddressTypeIPv4, ep("cp-x", "10.0.2.1", &ready)),
	).Build()
	got, err := EndpointSlicePeers(c, "trellis-system", "trellis-controlplane", "cp-self", 15014)()
	if err != nil {
		t.Fatal(err)
	}
	want := []Peer{{"cp-b", "http://10.0.0.2:15014"}, {"cp-c", "http://10.0.0.3:15014"}, {"cp-d", "http://[fd00::4]:15014"}}
	if !slices.Equal(got, want) {
		t.Errorf("peers %v, want %v", got, want)
	}
}
