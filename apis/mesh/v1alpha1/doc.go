// Package v1alpha1 holds the mesh.trellis.dev/v1alpha1 API: the Mesh resource
// that a platform team applies to install a Trellis service mesh; the
// TrafficPolicy and AuthorizationPolicy resources with which application
// teams shape and authorize the traffic to their Services and pods, where
// the Gateway API's routes do not reach; and the condition types and
// reasons reported on them.
//
// The types here are the single source of the CRD schema: controller-gen reads
// their markers, and `make manifests` writes config/crd. They carry no logic
// beyond defaults a reader needs to see beside the field.
//
// +kubebuilder:object:generate=true
// +groupName=mesh.trellis.dev
package v1alpha1
