package webhooks

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/validation"
)

// The Mesh webhook, served by the operator.
// +kubebuilder:webhook:path=/validate-mesh-trellis-dev-v1alpha1-mesh,mutating=false,failurePolicy=fail,sideEffects=None,groups=mesh.trellis.dev,resources=meshes,verbs=create;update,versions=v1alpha1,name=vmesh.trellis.dev,admissionReviewVersions=v1,timeoutSeconds=10

// MeshValidator refuses Mesh specs whose references do not hold: what CEL in
// the CRD cannot check because it needs the rest of the cluster.
type MeshValidator struct {
	// Reader reads Meshes and cert-manager issuers. An uncached reader: the
	// webhook runs rarely, and caching issuers would start informers on
	// first use.
	Reader client.Reader
}

var _ admission.Validator[*meshv1.Mesh] = &MeshValidator{}

// ValidateCreate checks a new Mesh.
func (v *MeshValidator) ValidateCreate(ctx context.Context, mesh *meshv1.Mesh) (admission.Warnings, error) {
	return v.validate(ctx, mesh, true)
}

// ValidateUpdate checks a changed Mesh. A Mesh being deleted is let through,
// so that removing its finalizer never fails on a reference gone missing.
func (v *MeshValidator) ValidateUpdate(ctx context.Context, _, mesh *meshv1.Mesh) (admission.Warnings, error) {
	if !mesh.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	return v.validate(ctx, mesh, false)
}

// ValidateDelete allows every deletion.
func (v *MeshValidator) ValidateDelete(context.Context, *meshv1.Mesh) (admission.Warnings, error) {
	return nil, nil
}

func (v *MeshValidator) validate(ctx context.Context, mesh *meshv1.Mesh, creating bool) (admission.Warnings, error) {
	errs, err := validation.Mesh(ctx, v.Reader, mesh, creating)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	if len(errs) > 0 {
		return nil, apierrors.NewInvalid(meshv1.GroupVersion.WithKind("Mesh").GroupKind(), mesh.Name, errs)
	}
	return nil, nil
}

// SetupMeshWebhook registers the Mesh validating webhook with the manager.
func SetupMeshWebhook(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &meshv1.Mesh{}).
		WithValidator(&MeshValidator{Reader: mgr.GetAPIReader()}).
		Complete()
}
