package validation

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
)

func mesh(name, namespace string, created time.Time) *meshv1.Mesh {
	return &meshv1.Mesh{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)},
		Spec:       meshv1.MeshSpec{Namespace: namespace},
	}
}

func TestNamespaceConflict(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	existing := []*meshv1.Mesh{mesh("old", "trellis-a", t0), mesh("same-second-b", "trellis-b", t0), mesh("same-second-a", "trellis-b", t0)}
	cases := map[string]struct {
		mesh     *meshv1.Mesh
		creating bool
		// wantOwner is the Mesh the error says has the namespace; "" for no conflict.
		wantOwner string
	}{
		"new Mesh in a taken namespace":       {mesh("new", "trellis-a", time.Time{}), true, "old"},
		"new Mesh in a free namespace":        {mesh("new", "trellis-free", time.Time{}), true, ""},
		"the older of two keeps it":           {mesh("old", "trellis-a", t0), false, ""},
		"the newer of two is refused":         {mesh("newer", "trellis-a", t0.Add(time.Hour)), false, "old"},
		"same second: the first name keeps":   {existing[2], false, ""},
		"same second: the second name yields": {existing[1], false, "same-second-a"},
	}
	scheme := runtime.NewScheme()
	if err := meshv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	b := fake.NewClientBuilder().WithScheme(scheme)
	for _, m := range existing {
		b = b.WithObjects(m)
	}
	c := b.Build()
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			fe, err := NamespaceConflict(context.Background(), c, tc.mesh, tc.creating)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.wantOwner == "" && fe != nil:
				t.Errorf("conflict reported: %v", fe)
			case tc.wantOwner != "" && fe == nil:
				t.Errorf("no conflict; want one with Mesh %q", tc.wantOwner)
			case tc.wantOwner != "" && !strings.Contains(fe.Error(), `Mesh "`+tc.wantOwner+`" already uses`):
				t.Errorf("error %q does not name Mesh %q", fe, tc.wantOwner)
			case fe != nil && fe.Field != "spec.namespace":
				t.Errorf("field %q, want spec.namespace", fe.Field)
			}
		})
	}
}

// Without cert-manager's CRDs, the error says so and how to do without it.
func TestIssuerExistsWithoutCertManager(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := meshv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	// A real client answers a kind the API server does not serve with
	// NoKindMatch, from its RESTMapper; the fake client does not, so it is told to.
	c := fake.NewClientBuilder().WithScheme(scheme).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(_ context.Context, _ client.WithWatch, _ client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
			gvk := obj.GetObjectKind().GroupVersionKind()
			return &meta.NoKindMatchError{GroupKind: gvk.GroupKind(), SearchedVersions: []string{gvk.Version}}
		},
	}).Build()
	m := mesh("cm", "trellis-cm", time.Time{})
	m.Spec.CA.CertManager = &meshv1.CertManagerCASpec{IssuerRef: meshv1.IssuerRef{Name: "corp"}}
	fe, err := IssuerExists(context.Background(), c, m)
	if err != nil {
		t.Fatal(err)
	}
	if fe == nil || !strings.Contains(fe.Error(), "cert-manager is not installed") || !strings.Contains(fe.Error(), "spec.ca.builtin") {
		t.Errorf("error %v; want one saying cert-manager is not installed and naming spec.ca.builtin", fe)
	}
}

func TestIssuerExistsSkipsExternalIssuers(t *testing.T) {
	c := fake.NewClientBuilder().Build()
	m := mesh("ext", "trellis-ext", time.Time{})
	m.Spec.CA.CertManager = &meshv1.CertManagerCASpec{IssuerRef: meshv1.IssuerRef{Name: "vault", Kind: "Issuer", Group: "vault.example.com"}}
	if fe, err := IssuerExists(context.Background(), c, m); fe != nil || err != nil {
		t.Errorf("external issuer checked: %v %v", fe, err)
	}
}
