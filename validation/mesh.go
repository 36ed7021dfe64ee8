package validation

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
)

// CertManagerGroup is the API group of cert-manager's issuers.
const CertManagerGroup = "cert-manager.io"

// Mesh runs every check and returns what fails, as field errors. creating
// is true when mesh does not exist yet, so any other Mesh in its namespace
// was there first. A non-nil error means the checks could not be made.
func Mesh(ctx context.Context, c client.Reader, mesh *meshv1.Mesh, creating bool) (field.ErrorList, error) {
	var errs field.ErrorList
	fe, err := NamespaceConflict(ctx, c, mesh, creating)
	if err != nil {
		return nil, err
	}
	if fe != nil {
		errs = append(errs, fe)
	}
	fe, err = IssuerExists(ctx, c, mesh)
	if err != nil {
		return nil, err
	}
	if fe != nil {
		errs = append(errs, fe)
	}
	return errs, nil
}

// NamespaceConflict refuses a Mesh whose spec.namespace another Mesh already
// uses: two meshes in one namespace would overwrite each other's CA and
// control plane. Of two existing Meshes, the older keeps the namespace (by
// name when both were created in the same second), so every reconcile agrees
// on which one is wrong; a Mesh being created is always the newer.
func NamespaceConflict(ctx context.Context, c client.Reader, mesh *meshv1.Mesh, creating bool) (*field.Error, error) {
	var meshes meshv1.MeshList
	if err := c.List(ctx, &meshes); err != nil {
		return nil, fmt.Errorf("listing Meshes: %w", err)
	}
	for _, other := range meshes.Items {
		if other.Name == mesh.Name || other.Spec.Namespace != mesh.Spec.Namespace {
			continue
		}
		if creating || other.CreationTimestamp.Before(&mesh.CreationTimestamp) ||
			(other.CreationTimestamp.Equal(&mesh.CreationTimestamp) && other.Name < mesh.Name) {
			return field.Invalid(field.NewPath("spec", "namespace"), mesh.Spec.Namespace,
				fmt.Sprintf("Mesh %q already uses namespace %q; give Mesh %q a namespace of its own, such as trellis-%s",
					other.Name, mesh.Spec.Namespace, mesh.Name, mesh.Name)), nil
		}
	}
	return nil, nil
}

// IssuerExists checks that spec.ca.certManager.issuerRef names an Issuer in
// the mesh namespace or a ClusterIssuer that exists. Issuers of other API
// groups (external issuers) are not checked: their kinds are not known here.
func IssuerExists(ctx context.Context, c client.Reader, mesh *meshv1.Mesh) (*field.Error, error) {
	cm := mesh.Spec.CA.CertManager
	if cm == nil {
		return nil, nil
	}
	ref := cm.IssuerRef
	group := ref.Group
	if group == "" {
		group = CertManagerGroup
	}
	if group != CertManagerGroup {
		return nil, nil
	}
	kind := ref.Kind
	if kind == "" {
		kind = meshv1.IssuerKindIssuer
	}
	path := field.NewPath("spec", "ca", "certManager", "issuerRef")
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schema.GroupVersionKind{Group: CertManagerGroup, Version: "v1", Kind: string(kind)})
	key := client.ObjectKey{Name: ref.Name}
	if kind == meshv1.IssuerKindIssuer {
		key.Namespace = mesh.Spec.Namespace
	}
	err := c.Get(ctx, key, u)
	switch {
	case err == nil:
		return nil, nil
	case meta.IsNoMatchError(err):
		return field.Invalid(path.Child("kind"), kind,
			"cert-manager is not installed in this cluster (no cert-manager.io/v1 "+string(kind)+
				"); install cert-manager, or use spec.ca.builtin instead of spec.ca.certManager"), nil
	case apierrors.IsNotFound(err):
		if kind == meshv1.IssuerKindIssuer {
			return field.Invalid(path.Child("name"), ref.Name, fmt.Sprintf(
				"no Issuer %q in namespace %q (the mesh namespace); create it there, or set spec.ca.certManager.issuerRef.kind to ClusterIssuer to use a cluster-wide issuer",
				ref.Name, mesh.Spec.Namespace)), nil
		}
		return field.Invalid(path.Child("name"), ref.Name, fmt.Sprintf(
			"no ClusterIssuer %q; create it, or name an existing one (kubectl get clusterissuers)", ref.Name)), nil
	default:
		return nil, fmt.Errorf("looking up %s %q: %w", kind, ref.Name, err)
	}
}
