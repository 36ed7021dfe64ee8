// Package v1alpha1 holds the mesh.trellis.dev/v1alpha1 API: the Mesh resource
// that a platform team applies to install a Trellis service mesh, and the
// condition types and reasons the operator reports on it.
//
// The types here are the single source of the CRD schema: controller-gen reads
// their markers, and `make manifests` writes config/crd. They carry no logic
// beyond defaults a reader needs to see beside the field.
//
// +kubebuilder:object:generate=true
// +groupName=mesh.trellis.dev
package v1alpha1
