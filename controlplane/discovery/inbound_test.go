package discovery

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// Inbound serves a pod's state to its own ServiceAccount only.
func TestInbound(t *testing.T) {
	h := start(t, harnessOptions{})
	ns := meshedNamespace(t, h.c, "inbound")
	ctx := context.Background()
	createPod(t, h.c, pod(ns, podSpec{
		name: "web-0", serviceAccount: "web", ip: "10.14.0.1", injected: true, labels: map[string]string{"app": "web"},
		ports: []corev1.ContainerPort{
			{Name: "http", ContainerPort: 8080},
			{Name: "grpc-admin", ContainerPort: 9090},
			{ContainerPort: 5000},
			{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
		},
	}))
	// A Service says that port 5000 speaks h2c, which its name does not.
	create(t, h.c,
		service(ns, "web", servicePortSpec{name: "api", port: 80, target: 5000, appProtocol: "kubernetes.io/h2c"}),
		endpointSlice(ns, "web-1", "web", []slicePortSpec{{name: "api", port: 5000, appProtocol: "kubernetes.io/h2c"}}, endpointSpec{ip: "10.14.0.1", pod: "web-0"}),
		&meshv1.AuthorizationPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "from-shop"},
			Spec: meshv1.AuthorizationPolicySpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Rules: []meshv1.AuthorizationRule{{
					From: []meshv1.AuthorizationSource{{Namespaces: []meshv1.NamespaceName{"shop"}}, {Identities: []meshv1.SPIFFEIDMatch{"spiffe://cluster.local/ns/ops/*"}}},
					To:   []meshv1.AuthorizationOperation{{Ports: []meshv1.Port{8080}, Methods: []meshv1.HTTPMethod{"GET"}}},
				}},
			},
		},
	)

	refused := map[string]struct {
		ctx  context.Context
		code codes.Code
	}{
		"another ServiceAccount":    {asIdentity(ctx, ns, "intruder"), codes.PermissionDenied},
		"another namespace's":       {asIdentity(ctx, "elsewhere", "web"), codes.PermissionDenied},
		"no identity at all":        {ctx, codes.Unauthenticated},
		"a pod that does not exist": {asIdentity(ctx, ns, "web"), codes.NotFound},
	}
	pods := map[string]string{"a pod that does not exist": "ghost"}
	for name, tc := range refused {
		t.Run(name, func(t *testing.T) {
			podName := pods[name]
			if podName == "" {
				podName = "web-0"
			}
			stream, err := h.client.Inbound(tc.ctx, &controlplanev1.InboundRequest{Pod: podName, Namespace: ns})
			if err == nil {
				var resp *controlplanev1.InboundResponse
				resp, err = stream.Recv()
				if err == nil {
					t.Fatalf("got %v, want %s", resp, tc.code)
				}
			}
			if status.Code(err) != tc.code {
				t.Fatalf("got %v, want %s", err, tc.code)
			}
			t.Logf("refused: %v", err)
		})
	}

	streamCtx, cancel := context.WithCancel(asIdentity(ctx, ns, "web"))
	defer cancel()
	stream, err := h.client.Inbound(streamCtx, &controlplanev1.InboundRequest{Pod: "web-0", Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	got, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	want := &controlplanev1.InboundResponse{
		Ports: []*controlplanev1.InboundPort{
			{Port: 5000, Protocol: controlplanev1.Protocol_PROTOCOL_HTTP2},
			{Port: 8080, Protocol: controlplanev1.Protocol_PROTOCOL_HTTP1},
			{Port: 9090, Protocol: controlplanev1.Protocol_PROTOCOL_GRPC},
		},
		MtlsMode: controlplanev1.MTLSMode_MTLS_MODE_STRICT,
		Authorization: &controlplanev1.Authorization{
			DefaultDeny: true,
			Allow: []*controlplanev1.AuthorizationRule{
				{Name: ns + "/from-shop/0", Namespaces: []string{"shop"}, Ports: []uint32{8080}, Methods: []string{"GET"}},
				{Name: ns + "/from-shop/0", Identities: []string{"spiffe://cluster.local/ns/ops/*"}, Ports: []uint32{8080}, Methods: []string{"GET"}},
			},
		},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("inbound state (-want +got):\n%s", diff)
	}

	// A Deny policy reaches the stream.
	create(t, h.c, &meshv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "no-debug"},
		Spec: meshv1.AuthorizationPolicySpec{
			Action: meshv1.AuthorizationActionDeny,
			Rules:  []meshv1.AuthorizationRule{{To: []meshv1.AuthorizationOperation{{Paths: []meshv1.HTTPPathMatch{"/debug/*"}}}}},
		},
	})
	got, err = stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	wantDeny := []*controlplanev1.AuthorizationRule{{Name: ns + "/no-debug/0", Paths: []string{"/debug/*"}}}
	if diff := cmp.Diff(wantDeny, got.Authorization.GetDeny(), protocmp.Transform()); diff != "" {
		t.Fatalf("deny rules (-want +got):\n%s", diff)
	}

	// The pod's replacement under the same name runs as another
	// ServiceAccount: the old identity's stream ends.
	p := &corev1.Pod{}
	if err := h.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-0"}, p); err != nil {
		t.Fatal(err)
	}
	if err := h.c.Delete(ctx, p, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	createPod(t, h.c, pod(ns, podSpec{name: "web-0", serviceAccount: "admin", ip: "10.14.0.9", injected: true}))
	for {
		_, err := stream.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("after the pod came back as another ServiceAccount: %v, want PermissionDenied", err)
		}
		break
	}
}
